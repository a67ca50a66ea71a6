"""The experiments in experiments/, their variants and what each is.

  python -m deeplearn.experiments             # one line each, then its :variants
  python -m deeplearn.experiments --markdown  # the README's table

An experiment file's docstring starts with a one-line summary, and the file
declares `VARIANTS = {"tiny": "what it changes", ...}`; its get_config(arg)
checks arg with `variants(arg, VARIANTS)`. Read here from the source, without
running it. Every experiment has `:tiny`, which runs offline in seconds
(tests/test_experiments.py runs each one).
"""

import ast
import dataclasses
import glob
import os
import sys

from deeplearn.config import did_you_mean

DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "experiments")


def variants(arg: str | None, known: dict) -> set:
  """The variants that `arg` names (":tiny", ":lars,tiny"), each checked against `known`."""
  names = set(arg.split(",")) if arg else set()
  for name in sorted(names - set(known)):
    raise ValueError(f"Unknown variant {name!r} in {arg!r}: {did_you_mean(name, known)}"
                     f"use any of {', '.join(':' + k for k in known)}, or none.")
  return names


@dataclasses.dataclass(frozen=True)
class Experiment:
  name: str
  path: str
  summary: str  # the docstring's first line
  variants: dict  # name -> what it changes


def read(path: str) -> Experiment:
  """An experiment file's summary and VARIANTS, read from its source."""
  with open(path) as f:
    module = ast.parse(f.read(), path)
  found = [node.value for node in module.body if isinstance(node, ast.Assign)
           and any(getattr(t, "id", None) == "VARIANTS" for t in node.targets)]
  return Experiment(
      name=os.path.splitext(os.path.basename(path))[0], path=path,
      summary=(ast.get_docstring(module) or "").partition("\n")[0].strip(),
      variants=ast.literal_eval(found[0]) if found else {})


def all_experiments(directory: str = DIR) -> list[Experiment]:
  return [read(p) for p in sorted(glob.glob(os.path.join(directory, "*.py")))]


def markdown(listed: list[Experiment]) -> str:
  """The README's experiment table (tests/test_readme.py holds them equal)."""
  rows = ["| experiment | what it is | variants |", "|---|---|---|"]
  rows += [f"| `{e.name}` | {e.summary.rstrip('.')} |"
           f" {', '.join(f'`:{v}`' for v in e.variants)} |" for e in listed]
  return "\n".join(rows)


def main(argv: list[str]) -> None:
  listed = all_experiments()
  if argv[1:] == ["--markdown"]:
    print(markdown(listed))
    return
  if argv[1:]:
    raise SystemExit("usage: python -m deeplearn.experiments [--markdown]")
  width = max(len(v) for e in listed for v in e.variants) + 1
  for e in listed:
    print(f"{e.name}: {e.summary}")
    for name, what in e.variants.items():
      print(f"    {':' + name:{width}s}  {what}")
  print("\npython -m deeplearn.train --config experiments/NAME.py[:VARIANT] --workdir runs/NAME")


if __name__ == "__main__":
  main(sys.argv)
