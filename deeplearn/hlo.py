"""Reading compiled XLA programs: the HLO text parser, FLOP counts and
collective bytes, and a measured matmul peak.

The bottom of the package: the loop reads a step's FLOPs from here
(`step_flops`), `deeplearn.inspect` its collectives and memory, local SGD its
per-step bytes (`deeplearn.parallel.local_sgd.bytes_per_step`). The byte
convention for collectives is `deeplearn.inspect`'s module docstring's.
"""

import dataclasses
import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
         "collective-permute")


@dataclasses.dataclass
class Collective:
  """One collective of the compiled step."""
  kind: str
  name: str  # the HLO instruction
  shapes: list  # its arrays, e.g. ["f32[768,3072]"]
  bytes: int  # per execution (module docstring: the convention)
  scalar_bytes: int  # of which rank-0 arrays: metrics
  group_size: int  # devices taking part
  count: int  # executions per step
  op_name: str  # the jax operation it comes from

  @property
  def bytes_per_step(self) -> int:
    return self.bytes * self.count

  @property
  def wire_bytes_per_step(self) -> float:
    """Bytes each device sends, for ring algorithms: 2(n-1)/n of the array
    for an all-reduce, (n-1)/n for the others, all of it for a permute."""
    n = self.group_size
    factor = {"all-reduce": 2 * (n - 1) / n, "collective-permute": 1.0}.get(
        self.kind, (n - 1) / n)
    return factor * self.bytes_per_step




def loop_factor(matmul_flops: float, matmul_once: float) -> float:
  # XLA's cost analysis counts a loop body once: scale it by the loops'
  # share of the matmul FLOPs (exact for models without loops).
  return matmul_flops / matmul_once if matmul_once else 1.0


def step_flops(compiled) -> float:
  """FLOPs of one call of a compiled step, per device: XLA's cost analysis with
  loop bodies (scanned layers, microbatches) counted once per iteration."""
  cost = compiled.cost_analysis()
  cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
  matmul_flops, matmul_once = HloModule(compiled.as_text()).matmul_flops()
  return float(cost.get("flops", 0.0)) * loop_factor(matmul_flops, matmul_once)


def matmul_peak(n: int = 2048, repeats: int = 20, device=None, dtype=jnp.float32) -> float:
  """FLOP/s of an n x n by n x n matmul through XLA on `device` (default: the
  first), best of `repeats`: the roof for a model FLOP utilisation on hardware
  without a published peak, such as a CPU (371-445 GFLOP/s in float32 on the 2
  AVX-512 cores of the development machine, November 2026)."""
  device = device or jax.devices()[0]
  a = jax.device_put(jnp.ones((n, n), dtype), device)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 / best



# -- the compiled HLO --------------------------------------------------------

_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?([\w.\-]+) = (.*)$")
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_CALLEE = re.compile(
    r"\b(calls|to_apply|body|condition|true_computation|false_computation)"
    r"=%?([\w.\-]+)")
_BRANCHES = re.compile(r"(?:branch_computations|called_computations)=\{([^}]*)\}")


def _split_type(rest: str):
  """'(f32[2], s32[]) all-reduce(%a, %b), ...' -> type, opcode, operands, attrs."""
  if rest.startswith("("):
    depth = 0
    for i, ch in enumerate(rest):
      depth += {"(": 1, ")": -1}.get(ch, 0)
      if depth == 0:
        break
    type_, rest = rest[:i + 1], rest[i + 1:].lstrip()
  else:
    type_, _, rest = rest.partition(" ")
  opcode, _, rest = rest.partition("(")
  depth, i = 1, 0
  while i < len(rest) and depth:
    depth += {"(": 1, ")": -1}.get(rest[i], 0)
    i += 1
  return type_, opcode.strip(), rest[:i - 1], rest[i:]


def _arrays(type_: str) -> list[tuple[str, list[int]]]:
  out = []
  for dtype, dims in _ARRAY.findall(type_):
    out.append((dtype, [int(d) for d in dims.split(",") if d]))
  return out


def _array_bytes(dtype: str, dims: list[int]) -> int:
  if dtype == "pred":
    bits = 8
  else:
    digits = re.search(r"\d+", dtype)
    bits = int(digits.group()) if digits else 32
  return math.prod(dims) * bits // 8


def _group_size(attrs: str, default: int) -> int:
  m = re.search(r"replica_groups=\{\{([\d,]*)\}", attrs)
  if m:
    return len(m.group(1).split(","))
  m = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", attrs)
  if m:
    return int(m.group(2))
  m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attrs)
  if m:
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", m.group(1)))
    names = re.findall(r"'(\w+)'", m.group(2))
    return math.prod(int(sizes.get(n, 1)) for n in names)
  return default


class HloModule:
  """A compiled module's text, parsed: computations of instructions
  (name -> type, opcode, operands, attributes) and how often each
  computation runs per step (while bodies: their trip count)."""

  def __init__(self, hlo: str):
    self.computations, self.entry, current = {}, None, None
    for line in hlo.splitlines():
      if not line.startswith((" ", "\t")):
        m = _COMPUTATION.match(line)
        current = m and m.group(1)
        if current:
          self.computations[current] = {}
          if line.startswith("ENTRY"):
            self.entry = current
        continue
      m = _INSTRUCTION.match(line)
      if current and m:
        self.computations[current][m.group(1)] = _split_type(m.group(2))
    partitions = re.search(r"num_partitions=(\d+)", hlo)
    self.num_devices = int(partitions.group(1)) if partitions else 1
    self.unknown_trip_counts = 0
    self._callers, self._counts = {}, {}  # callee -> [(caller, factor)]
    for caller, instructions in self.computations.items():
      for _, opcode, _, attrs in instructions.values():
        callees = dict(_CALLEE.findall(attrs))
        for names in _BRANCHES.findall(attrs):
          for callee in re.findall(r"%?([\w.\-]+)", names):
            self._callers.setdefault(callee, []).append((caller, 1))
        factor = 1
        if opcode == "while":
          factor = _trip_count(
              attrs, self.computations.get(callees.get("condition"), {}))
          self.unknown_trip_counts += factor is None
          factor = factor or 1
        for role, callee in callees.items():
          self._callers.setdefault(callee, []).append(
              (caller, factor if role in ("body", "condition") else 1))

  def executions(self, name: str, seen=()) -> int:
    """How many times computation `name` runs in one execution of the entry."""
    if name == self.entry:
      return 1
    if name not in self._counts:
      self._counts[name] = sum(
          self.executions(caller, seen + (name,)) * factor
          for caller, factor in self._callers.get(name, ()) if caller not in seen)
    return self._counts[name]

  def operand_arrays(self, computation: str, operands: str) -> list:
    instructions = self.computations[computation]
    return [a for op in re.findall(r"%([\w.\-]+)", operands)
            if op in instructions for a in _arrays(instructions[op][0])]

  def matmul_flops(self) -> tuple[float, float]:
    """FLOPs of the dots and convolutions: (per step, each counted once)."""
    per_step = once = 0.0
    for comp, instructions in self.computations.items():
      for type_, opcode, operands, attrs in instructions.values():
        if opcode not in ("dot", "convolution"):
          continue
        arrays = self.operand_arrays(comp, operands)
        out = _arrays(type_)
        if len(arrays) < 2 or not out:
          continue
        if opcode == "dot":  # out elements x contracted length
          dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", attrs)
          depth = math.prod(arrays[0][1][int(d)] for d in
                            (dims.group(1).split(",") if dims and dims.group(1)
                             else []))
          flops = 2.0 * math.prod(out[0][1]) * depth
        else:
          flops = _conv_flops(arrays[0][1], arrays[1][1], out[0][1], attrs)
        per_step += flops * self.executions(comp)
        once += flops
    return per_step, once


def _conv_flops(lhs, rhs, out, attrs) -> float:
  """A convolution's multiply-adds x 2, as XLA counts them: per output
  element, the input features of its group times the window positions that
  land on input (not padding, not the holes of a dilated input; the TPU
  compiler writes batched matmuls as such convolutions)."""
  labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", attrs)
  if not labels:
    return 0.0
  lhs_l, rhs_l, out_l = labels.groups()
  window = re.search(r"window=\{([^}]*)\}", attrs)
  fields = dict(f.split("=") for f in (window.group(1).split() if window else ()))
  spatial = [c for c in out_l if c.isdigit()]

  def field(name, d, default):
    values = fields.get(name)
    return int(values.split("x")[d].split("_")[0]) if values else default

  flops = 2.0 * out[out_l.index("b")] * out[out_l.index("f")] * rhs[rhs_l.index("i")]
  for d, c in enumerate(spatial):
    o = np.arange(out[out_l.index(c)])[:, None]
    k = np.arange(field("size", d, 1))[None, :]
    dilation = field("lhs_dilate", d, 1)
    index = o * field("stride", d, 1) + k * field("rhs_dilate", d, 1) - field(
        "pad", d, 0)
    valid = ((index >= 0) & (index <= (lhs[lhs_l.index(c)] - 1) * dilation)
             & (index % dilation == 0))
    flops *= int(valid.sum())
  return flops


def parse_collectives(hlo: "str | HloModule") -> tuple[list[Collective], int]:
  """The collectives of a compiled module, counted per step.

  Returns them and the number of while loops whose trip count could not be
  read (their collectives are counted once per step).
  """
  module = hlo if isinstance(hlo, HloModule) else HloModule(hlo)
  found = {}
  for comp, instructions in module.computations.items():
    for name, (type_, opcode, operands, attrs) in instructions.items():
      kind = opcode.removesuffix("-start")
      if kind not in KINDS:
        continue
      if kind == "all-reduce" and comp.startswith("all-reduce-scatter"):
        kind = "reduce-scatter"  # TPU: a fused all-reduce + slice
      # Operands, else (not found) the result's arrays.
      arrays = module.operand_arrays(comp, operands) or _arrays(type_)
      group = _group_size(attrs, module.num_devices)
      gathered = group if kind == "all-gather" else 1
      channel = re.search(r"channel_id=(\d+)", attrs)
      op_name = re.search(r'op_name="([^"]*)"', attrs)
      c = Collective(
          kind=kind, name=name,
          shapes=[f"{d}[{','.join(map(str, s))}]" for d, s in arrays],
          bytes=sum(_array_bytes(*a) for a in arrays) * gathered,
          scalar_bytes=sum(_array_bytes(d, s) for d, s in arrays if not s)
          * gathered,
          group_size=group, count=module.executions(comp),
          op_name=op_name.group(1) if op_name else "")
      key = channel.group(1) if channel else f"{comp}/{name}"
      if key not in found or c.count > found[key].count:
        found[key] = c
  collectives = sorted(found.values(), key=lambda c: -c.bytes_per_step)
  return collectives, module.unknown_trip_counts


def _trip_count(attrs: str, condition: dict) -> int | None:
  m = re.search(r'"known_trip_count":\{"n":"(\d+)"', attrs)
  if m:
    return int(m.group(1))
  # Else the loop condition's one integer constant: `i < N`, i from 0 (how
  # jax lowers scan and fori_loop).
  constants = [int(operands) for type_, opcode, operands, _ in condition.values()
               if opcode == "constant" and re.match(r"[su]\d+\[\]", type_)
               and re.fullmatch(r"-?\d+", operands)]
  return constants[0] if len(constants) == 1 and constants[0] > 0 else None
