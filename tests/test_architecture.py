"""The package's imports point down only (docs/ARCHITECTURE.md): no cycle, no
deeplearn import hidden inside a function, no layer importing one above it."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "deeplearn")

# Layers, bottom to top; a module may import its own layer and those below.
# Modules not named take the layer of their package (e.g. deeplearn.models.x).
LAYERS = [
    ("ground", ["deeplearn.files", "deeplearn.config", "deeplearn.metrics",
                "deeplearn.checkpoint",
                "deeplearn.distributed", "deeplearn.preemption", "deeplearn.hlo",
                "deeplearn.images", "deeplearn.generative_metrics",
                "deeplearn.experiments"]),
    ("layout", ["deeplearn.parallel", "deeplearn.parallel.mesh",
                "deeplearn.parallel.sharding"]),
    ("inputs and optimizers", ["deeplearn.data", "deeplearn.language",
                               "deeplearn.parallel.async_sgd",
                               "deeplearn.parallel.local_sgd", "deeplearn.optim"]),
    ("models and tasks", ["deeplearn.models", "deeplearn.tasks",
                          "deeplearn.quantization"]),
    ("step", ["deeplearn.step"]),
    ("step forms", ["deeplearn.parallel.data_parallel", "deeplearn.parallel.pipeline",
                    "deeplearn.parallel.forms"]),
    ("schemes", ["deeplearn.schemes"]),
    ("loop", ["deeplearn.loop"]),
    ("entry points", ["deeplearn.cli", "deeplearn.train", "deeplearn.evaluate", "deeplearn.sample",
                      "deeplearn.inspect"]),
]


def module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
  return rel.removesuffix(".__init__")


def modules() -> dict[str, str]:
  out = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        out[module_name(path)] = path
  return out


MODULES = modules()


def resolve(name: str) -> str | None:
  """The deeplearn module an import names (a package's name is its
  __init__; `from deeplearn import x` names deeplearn.x if it exists)."""
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name or None


def imports(path: str):
  """(module imported, inside a function?) of every deeplearn import."""
  tree = ast.parse(open(path, encoding="utf8").read())
  found = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      nested = in_function or isinstance(
          child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      names = []
      if isinstance(child, ast.Import):
        names = [a.name for a in child.names]
      elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
        # `from deeplearn.data import pipeline` imports the submodule (and
        # runs the package's __init__, which is not a dependency of design).
        names = [f"{child.module}.{a.name}" if f"{child.module}.{a.name}" in MODULES
                 else child.module for a in child.names]
      for name in names:
        if name.startswith("deeplearn"):
          target = resolve(name)
          if target:
            found.append((target, in_function))
      visit(child, nested)

  visit(tree, False)
  return found


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def layer_of(name: str) -> int:
  best, index = "", None
  for i, (_, prefixes) in enumerate(LAYERS):
    for prefix in prefixes:
      if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
        best, index = prefix, i
  return index


def test_every_module_has_a_layer():
  unplaced = sorted(n for n in MODULES if n != "deeplearn" and layer_of(n) is None)
  assert not unplaced, f"add these to LAYERS and docs/ARCHITECTURE.md: {unplaced}"


def test_no_deeplearn_import_inside_a_function():
  hidden = sorted(f"{name} imports {target}" for name, found in GRAPH.items()
                  for target, inside in found if inside)
  assert not hidden, hidden


def test_no_import_cycle():
  edges = {name: {t for t, _ in found if t != name and t != "deeplearn"}
           for name, found in GRAPH.items()}
  state, stack, cycles = {}, [], []

  def walk(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(edges.get(node, ())):
      if state.get(nxt) == "open":
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        walk(nxt)
    stack.pop()
    state[node] = "done"

  for node in sorted(edges):
    if node not in state:
      walk(node)
  assert not cycles, [" -> ".join(c) for c in cycles]


def test_imports_point_down_the_layers():
  upward = []
  for name, found in GRAPH.items():
    if name == "deeplearn":
      continue
    for target, _ in found:
      if target != "deeplearn" and layer_of(target) > layer_of(name):
        upward.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target}"
                      f" ({LAYERS[layer_of(target)][0]})")
  assert not upward, upward


@pytest.mark.parametrize("source", ["def f():\n  from deeplearn import train\n",
                                    "import deeplearn.loop\n"])
def test_the_walker_sees_imports(source, tmp_path):
  path = tmp_path / "m.py"
  path.write_text(source)
  (target, inside), = imports(str(path))
  assert target in ("deeplearn.train", "deeplearn.loop")
  assert inside == source.startswith("def")
