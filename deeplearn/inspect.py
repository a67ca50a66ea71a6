"""What a train step costs, read from its ahead-of-time compilation.

  python -m deeplearn.inspect --config experiments/mnist1d_cnn.py --cpu_devices=4
  python -m deeplearn.inspect \\
    --config experiments/shakespeare_transformer_fsdp_tp.py:gpt2 --topology v5e:4x4

The experiment's own jitted step (its step form, deeplearn.parallel.forms) is
lowered with
abstract inputs and compiled, nothing run, for the configured mesh: on
`--cpu_devices` simulated CPU devices, or with `--topology` for a TPU slice
through libtpu's topology descriptions (no TPU needed). The report, per
device: parameter and optimizer bytes (from the state's shardings), XLA's
memory analysis (its temporaries are the activation estimate), FLOPs and
bytes accessed (XLA's cost analysis, which counts a loop body once: scaled
by the loops' share of the matmul FLOPs read from the HLO), every collective
in the compiled HLO with its bytes per step beside the strategy's minimum,
and for a TPU slice whether the step fits in HBM and a roofline estimate of
its time. `--json PATH` writes the same numbers.

Collective bytes, one convention for measured and theoretical figures: the
array a device holds in full at the collective, per execution, as the
partitioned HLO has it: the operand of an all-reduce, reduce-scatter,
all-to-all or collective-permute, the result of an all-gather. Per step is
that times the executions: collectives in a while loop (scanned layers,
gradient accumulation) count once per iteration, the trip count read from
the loop. Copies the TPU compiler makes of one collective (async collective
fusion) share a channel id and count once. Rank-0 operands are metrics (loss,
counts, the gradient norm), reported apart.

Theoretical minimum per parameter, for a mesh whose batch axes (the `batch`
rule's) have more than one device: gradients are reduced over them once, and
a parameter sharded over a batch axis (FSDP, ZeRO-3) is all-gathered once.
Data parallel: an all-reduce of the gradient bytes; FSDP: an all-gather of
the parameters and a reduce-scatter of the gradients (plus an all-reduce of
the shard over batch axes that do not split it). XLA:CPU reduces FSDP
gradients with an all-reduce and keeps its slice (the same bytes by this
convention, twice the traffic); the TPU compiler uses reduce-scatters.
Tensor parallelism adds activation all-reduces (Megatron: two in the forward
and two in the backward pass of each block), counted in the all-reduce
theory and the overall ratio; expert parallelism four all-to-alls per
mixture-of-experts layer (dispatch and combine, forward and backward), and
its expert weights, split over a batch axis, are never gathered.

HBM needed per device: arguments + outputs - outputs written in place of a
donated argument + temporaries + the program, all from XLA's memory
analysis: an upper bound on what is live at once. A TPU step that cannot fit
is refused by the compiler itself; the report then says so, with the
temporaries the compiler asked for.
"""

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import re
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from deeplearn import config as config_lib, step as step_lib, train
from deeplearn.hlo import KINDS, HloModule, loop_factor, parse_collectives
from deeplearn.config import did_you_mean
from deeplearn.models import moe
from deeplearn.parallel import forms, mesh as mesh_lib, sharding
from deeplearn.schemes import supervised


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU chip's published figures (per chip, bf16)."""
  hbm_bytes: float
  peak_flops: float  # FLOP/s, bf16
  hbm_bandwidth: float  # bytes/s
  ici_bandwidth: float  # bytes/s, bidirectional, all links of a chip
  dims: int  # 2: a 2D torus (v5e, v6e); 3: 3D (v4, v5p)
  host_bounds: tuple  # chips per host (only process indices follow)
  chip_config: str  # libtpu's name: one JAX device per chip


GiB = 2**30
# Google Cloud TPU docs, system architecture tables (read 2026-11):
#   v4  https://cloud.google.com/tpu/docs/v4: 275 TFLOP/s, 32 GiB, 1200 GB/s.
#       Its ICI per chip is not in that table: 6 links x 90 GB/s
#       (bidirectional) from the JAX scaling book, jax-ml.github.io/scaling-book/tpus.
#   v5e https://cloud.google.com/tpu/docs/v5e: 197 TFLOP/s, 16 GB, 819 GB/s,
#       ICI 400 GB/s bidirectional per chip.
#   v5p https://cloud.google.com/tpu/docs/v5p: 459 TFLOP/s, 95 GiB,
#       2765 GB/s, ICI 1200 GB/s bidirectional per chip.
#   v6e https://cloud.google.com/tpu/docs/v6e: 918 TFLOP/s, 32 GB,
#       1638 GB/s, ICI 800 GB/s bidirectional per chip.
# HBM capacities are taken as GiB: v5e's "16 GB" is 16 GiB (libtpu's
# compiler refuses a v5e step beyond 15.75 GiB of HBM, the rest reserved).
CHIPS = {
    "v4": Chip(32 * GiB, 275e12, 1200e9, 540e9, 3, (2, 2, 1), "megacore"),
    "v5e": Chip(16 * GiB, 197e12, 819e9, 400e9, 2, (2, 4, 1), "default"),
    "v5p": Chip(95 * GiB, 459e12, 2765e9, 1200e9, 3, (2, 2, 1), "default"),
    "v6e": Chip(32 * GiB, 918e12, 1638e9, 800e9, 2, (2, 4, 1), "default"),
}
TOPOLOGY_EXAMPLES = "v4:2x2x1, v5e:2x2, v5e:4x4, v5e:16x16, v5p:2x2x2, v6e:8x8"

@dataclasses.dataclass
class Report:
  """The numbers `inspect_step` reads; every byte count is per device."""
  config: str
  target: str  # "8 x cpu" or "v5e:4x4 (16 x TPU v5 lite)"
  mesh: dict
  num_params: int
  param_bytes: int  # all parameters, unsharded
  param_bytes_per_device: int
  optimizer_bytes_per_device: int
  other_state_bytes_per_device: int
  memory: dict  # XLA memory analysis: argument, output, alias, temp, code
  hbm_bytes_needed: int
  flops: float  # per device per step
  matmul_flops: float  # of which dots and convolutions, read from the HLO
  bytes_accessed: float
  collectives: list
  unknown_trip_counts: int  # loops whose collectives were counted once
  theory: dict  # kind -> bytes per step: gradients and parameters
  theory_tp_activations: int  # tensor-parallel activation all-reduces
  lower_s: float
  compile_s: float
  compile_error: str = ""  # the TPU compiler's, when the step cannot fit
  chip: dict | None = None
  fits: bool | None = None
  roofline: dict | None = None

  def measured(self) -> dict:
    """kind -> bytes per step of non-scalar arrays (not the metrics)."""
    out = {kind: 0 for kind in KINDS}
    for c in self.collectives:
      out[c.kind] += (c.bytes - c.scalar_bytes) * c.count
    return out

  def metric_bytes(self) -> int:
    return sum(c.scalar_bytes * c.count for c in self.collectives)

  def ratio(self) -> float | None:
    """Measured non-scalar collective bytes over the theoretical minimum."""
    theory = sum(self.theory.values()) + self.theory_tp_activations
    return sum(self.measured().values()) / theory if theory else None

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    for c, d in zip(self.collectives, out["collectives"]):
      d["bytes_per_step"] = c.bytes_per_step
      d["wire_bytes_per_step"] = c.wire_bytes_per_step
    out.update(measured=self.measured(), metric_bytes=self.metric_bytes(),
               ratio=self.ratio())
    return out


# -- the step, lowered and compiled ------------------------------------------


def topology_devices(name: str) -> list:
  """The devices of a TPU slice, e.g. "v5e:4x4", as libtpu describes them."""
  generation, _, shape = name.partition(":")
  dims = shape.split("x")
  if generation not in CHIPS or not all(d.isdigit() and int(d) > 0 for d in dims):
    raise ValueError(
        f"--topology={name!r}: {did_you_mean(generation, CHIPS)}write"
        f" GENERATION:SHAPE with a generation in {sorted(CHIPS)}, e.g."
        f" {TOPOLOGY_EXAMPLES}.")
  chip = CHIPS[generation]
  if len(dims) != chip.dims:
    raise ValueError(f"--topology={name!r}: {generation} slices are"
                     f" {chip.dims}-D, e.g. {TOPOLOGY_EXAMPLES}.")
  if importlib.util.find_spec("libtpu") is None:
    raise RuntimeError(
        "--topology compiles through libtpu, which is not installed: run"
        " pip install -e '.[tpu]' (it brings the libtpu matching jax).")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # libtpu takes a lock file for the TPU of the machine; compiling touches
  # no TPU, so let other processes (pytest workers, a second inspect) in.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  dims = [int(d) for d in dims] + [1] * (3 - len(dims))
  bounds = tuple(min(b, d) for b, d in zip(chip.host_bounds, dims))
  topology = topologies.get_topology_desc(
      platform="tpu", topology_name=name, chip_config_name=chip.chip_config,
      chips_per_host_bounds=bounds, num_slices=1)
  return list(topology.devices)


def _placed(config, devices):
  """TPU devices in the mesh's order, neighbours on the innermost axes (as
  jax.make_mesh places a real slice)."""
  from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
  shape = tuple(mesh_lib.mesh_shape(config.mesh.to_dict(), len(devices)).values())
  try:
    return list(mesh_utils.create_device_mesh(
        shape, devices, allow_split_physical_axes=True).flat)
  except (ValueError, NotImplementedError, AssertionError):
    return devices


def abstract_batch(run: step_lib.Run, state) -> dict:
  """A training batch as shapes: `inputs` as the dataset gives them and the
  task's targets, one per output position (the model's output minus its
  class / vocabulary axis). `state`: step_lib.abstract_state(run)."""
  inputs = jax.ShapeDtypeStruct(
      (run.config.data.batch_size, *run.info.input_shape),
      run.task.input_dtype, sharding=run.batch_sharding)
  logits = jax.eval_shape(
      lambda v, x: run.task.model.apply(v, x, train=False),
      {"params": state.params, **state.model_state}, inputs)
  targets = jax.ShapeDtypeStruct(logits.shape[:-1], jnp.int32,
                                 sharding=run.batch_sharding)
  return {"inputs": inputs, run.task.target_key: targets}


def inspect_step(config, devices=None, topology: str | None = None,
                 config_name: str = "") -> Report:
  """Compiles the train step of `config` ahead of time and reads its costs.

  `topology` (e.g. "v5e:4x4") compiles for that TPU slice; otherwise for
  `devices` (default: all of jax.devices()).
  """
  if topology:
    devices = _placed(config, topology_devices(topology))
  devices = list(jax.devices() if devices is None else devices)
  run = supervised.build(config, devices)
  state = step_lib.abstract_state(run)
  batch = abstract_batch(run, state)
  t0 = time.perf_counter()
  with jax.set_mesh(run.mesh):
    lowered = forms.make_train_step(run).lower(state, batch)
  t1 = time.perf_counter()
  compile_error = ""
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    # The TPU compiler refuses a step that cannot fit in HBM: report that.
    if not (topology and "RESOURCE_EXHAUSTED" in str(e)):
      raise
    compiled, compile_error = None, str(e).splitlines()[0]
  t2 = time.perf_counter()

  if compiled is not None:
    mem = compiled.memory_analysis()
    memory = {key: int(getattr(mem, f"{key}_size_in_bytes", 0) or 0) for key
              in ("argument", "output", "alias", "temp", "generated_code")}
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    module = HloModule(compiled.as_text())
    collectives, unknown = parse_collectives(module)
    matmul_flops, matmul_once = module.matmul_flops()
  else:  # the state and batch, and the temporaries the compiler names
    needed = re.search(r"temporaries \(([\d.]+)G\)", compile_error)
    arguments = _bytes((state, batch), per_device=True)
    memory = {"argument": arguments, "output": arguments, "alias": arguments,
              "temp": int(float(needed.group(1)) * GiB) if needed else 0,
              "generated_code": 0}
    cost, collectives, unknown, matmul_flops, matmul_once = {}, [], 0, 0.0, 0.0
  loops = loop_factor(matmul_flops, matmul_once)
  kind = devices[0].device_kind
  report = Report(
      config=config_name or config.model.name,
      target=(f"{topology} ({len(devices)} x {kind})" if topology
              else f"{len(devices)} x {kind}"),
      mesh={k: v for k, v in run.mesh.shape.items() if v > 1} or {"data": 1},
      num_params=step_lib.num_params(state.params),
      param_bytes=_bytes(state.params),
      param_bytes_per_device=_bytes(state.params, per_device=True),
      optimizer_bytes_per_device=_bytes(state.opt_state, per_device=True),
      other_state_bytes_per_device=_bytes(
          (state.model_state, state.avg_params, state.step, state.rng,
           state.nonfinite_streak), per_device=True),
      memory=memory,
      # Live at once, at most: the arguments, the outputs not written in
      # place of an argument (the donated state is), the temporaries and
      # the program.
      hbm_bytes_needed=(memory["argument"] + memory["output"] - memory["alias"]
                        + memory["temp"] + memory["generated_code"]),
      flops=float(cost.get("flops", 0.0)) * loops,
      matmul_flops=matmul_flops,
      bytes_accessed=float(cost.get("bytes accessed", 0.0)) * loops,
      collectives=collectives, unknown_trip_counts=unknown,
      theory=gradient_theory(run, state) | {
          "all-to-all": moe_all_to_all_theory(run)},
      theory_tp_activations=tp_activation_theory(run),
      lower_s=t1 - t0, compile_s=t2 - t1, compile_error=compile_error)
  if topology:
    chip = CHIPS[topology.partition(":")[0]]
    report.chip = {"name": topology.partition(":")[0], **dataclasses.asdict(chip)}
    report.fits = report.hbm_bytes_needed <= chip.hbm_bytes and not compile_error
    report.roofline = roofline(report, chip) if compiled is not None else None
  return report



def _bytes(tree, per_device=False) -> int:
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if per_device else x.shape
    total += math.prod(shape) * np.dtype(x.dtype).itemsize
  return int(total)


# -- theory ------------------------------------------------------------------


def gradient_theory(run: step_lib.Run, state) -> dict:
  """Minimum gradient / parameter collective bytes per step, by kind."""
  mesh = run.mesh
  batch = [a for a in sharding.batch_axes(run.rules, mesh) if mesh.shape[a] > 1]
  out = {kind: 0 for kind in KINDS}
  if not batch:
    return out
  for p in jax.tree.leaves(state.params):
    used = {a for axes in p.sharding.spec if axes
            for a in ((axes,) if isinstance(axes, str) else axes)}
    split = math.prod(mesh.shape[a] for a in used if a not in batch)
    gathered = math.prod(p.shape) * np.dtype(p.dtype).itemsize // split
    fsdp = math.prod(mesh.shape[a] for a in batch if a in used)
    if "expert" in used and "expert" in batch:
      # Expert parallelism: the tokens come to the experts, whose weights
      # stay put; their gradients reduce over the other batch axes only.
      if len(batch) > len([a for a in batch if a in used]):
        out["all-reduce"] += gathered // fsdp
    elif fsdp > 1:  # ZeRO-3: gather for the forward, reduce-scatter the grads
      out["all-gather"] += gathered
      out["reduce-scatter"] += gathered
      if len(batch) > len([a for a in batch if a in used]):
        out["all-reduce"] += gathered // fsdp  # the shard, over the rest
    else:
      out["all-reduce"] += gathered
  return out


def tp_activation_theory(run: step_lib.Run) -> int:
  """Megatron's activation all-reduces, bytes per step: 2 forward + 2
  backward per block of [batch per device, length, embed] in the compute
  dtype. Only for models with blocks (num_layers, embed_dim) on a mesh
  whose `model` axis splits them."""
  model_cfg, mesh = run.config.model, run.mesh
  if mesh.shape.get("model", 1) == 1 or not all(
      k in model_cfg for k in ("num_layers", "embed_dim")):
    return 0
  rules = dict(run.rules)
  if not any(rules.get(name) == "model" for name in ("mlp", "heads")):
    return 0
  batch = run.config.data.batch_size // sharding.num_batch_shards(run.rules, mesh)
  length = run.config.data.seq_len or 1
  itemsize = jnp.dtype(model_cfg.get("dtype", "float32")).itemsize
  return 4 * model_cfg.num_layers * batch * length * model_cfg.embed_dim * itemsize


def moe_all_to_all_theory(run: step_lib.Run) -> int:
  """Expert parallelism's all-to-alls, bytes per step: per sparse MoE layer
  the dispatch and the combine, forward and backward, each of the slots a
  device's tokens fill, [experts, batch per device, capacity, embed] in the
  compute dtype (GShard). Only when `expert -> expert` splits the experts."""
  model_cfg, mesh = run.config.model, run.mesh
  experts = model_cfg.get("moe_experts", 0)
  if (not experts or mesh.shape.get("expert", 1) == 1
      or dict(run.rules).get("expert") != "expert"
      or model_cfg.get("moe_mode") == "soft"):
    return 0
  length = run.config.data.seq_len
  slots = moe.capacity(length, experts, model_cfg.moe_top_k,
                       model_cfg.moe_capacity_factor)
  batch = run.config.data.batch_size // sharding.num_batch_shards(run.rules, mesh)
  itemsize = jnp.dtype(model_cfg.get("dtype", "float32")).itemsize
  layers = model_cfg.num_layers // model_cfg.moe_every
  return 4 * layers * experts * batch * slots * model_cfg.embed_dim * itemsize



# -- roofline and the table --------------------------------------------------


def roofline(report: Report, chip: Chip) -> dict:
  """A lower bound on the step time from the chip's peak rates.

  Each resource alone: FLOPs at the peak bf16 rate (float32 matmuls run
  several times slower), XLA's bytes accessed at the HBM bandwidth, and the
  bytes each chip sends in collectives (ring algorithms) at its whole ICI
  bandwidth. The step takes at least the largest of the three (perfect
  overlap) and at most about their sum (none).
  """
  times = {
      "compute_s": report.flops / chip.peak_flops,
      "hbm_s": report.bytes_accessed / chip.hbm_bandwidth,
      "ici_s": sum(c.wire_bytes_per_step for c in report.collectives)
               / chip.ici_bandwidth,
  }
  bound = max(times, key=times.get)
  return {**times, "step_s": times[bound], "no_overlap_s": sum(times.values()),
          "bound": bound.removesuffix("_s")}


def _size(n: float) -> str:
  for unit, scale in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
    if abs(n) >= scale:
      return f"{n / scale:.3g} {unit}"
  return f"{n:.0f} B"


def _time(s: float) -> str:
  return f"{s * 1e3:.3g} ms" if s >= 1e-3 else f"{s * 1e6:.3g} us"


def fits_line(report: Report) -> str:
  need, has = report.hbm_bytes_needed / GiB, report.chip["hbm_bytes"] / GiB
  if report.fits:
    return f"fits: {need:.2f} of {has:.0f} GiB ({need / has:.0%})"
  return (f"does NOT fit: needs {need:.2f} GiB, has {has:.0f} GiB"
          f" ({need - has:.2f} GiB over)")


def format_report(report: Report, top: int = 12) -> str:
  """The report as a table for the terminal."""
  mem = report.memory
  mesh = " ".join(f"{k}={v}" for k, v in report.mesh.items())
  lines = [
      f"{report.config} on {report.target}, mesh {mesh}",
      (f"the compiler refused the step after {report.compile_s:.1f} s:"
       f" {report.compile_error}" if report.compile_error else
       f"compiled ahead of time in {report.compile_s:.1f} s (lowered in"
       f" {report.lower_s:.1f} s)"),
      "",
      "memory per device",
      f"  parameters         {_size(report.param_bytes_per_device):>10}"
      f"   ({report.num_params:,} params, {_size(report.param_bytes)} unsharded)",
      f"  optimizer state    {_size(report.optimizer_bytes_per_device):>10}",
      f"  other state        {_size(report.other_state_bytes_per_device):>10}"
      "   (batch statistics, averaged weights, step, rng)",
      f"  arguments          {_size(mem['argument']):>10}   (state and batch)",
      f"  outputs            {_size(mem['output']):>10}"
      f"   ({_size(mem['alias'])} of them in place of the arguments)",
      f"  activations (temp) {_size(mem['temp']):>10}"
      "   (XLA temporaries: saved activations, gradients, workspace)",
      f"  program            {_size(mem['generated_code']):>10}",
      f"  needed             {_size(report.hbm_bytes_needed):>10}"
      + (f"   {fits_line(report)}" if report.chip else ""),
  ]
  if report.compile_error:  # no program: nothing more to read
    return "\n".join(lines)
  lines += [
      "",
      "per device per step (XLA cost analysis, loop bodies times their trip"
      " count)",
      f"  FLOPs              {report.flops:>10.3g}   ({report.matmul_flops:.3g}"
      " in matmuls and convolutions)",
      f"  bytes accessed     {_size(report.bytes_accessed):>10}",
      "",
      f"collectives per step per device ({len(report.collectives)} in the"
      " compiled HLO)",
      "  kind                count     measured       theory   ratio",
  ]
  measured = report.measured()
  tp = report.theory_tp_activations
  for kind in KINDS:
    count = sum(c.count for c in report.collectives if c.kind == kind)
    theory = report.theory.get(kind, 0) + (tp if kind == "all-reduce" else 0)
    if not (count or theory):
      continue
    ratio = f"{measured[kind] / theory:6.2f}" if theory else "     -"
    lines.append(f"  {kind:<18} {count:>6} {_size(measured[kind]):>12}"
                 f" {_size(theory) if theory else '-':>12}  {ratio}")
  if report.theory.get("reduce-scatter"):
    # XLA:CPU reduces FSDP gradients with all-reduces: compare the sum.
    reduced = measured["all-reduce"] + measured["reduce-scatter"]
    theory = report.theory["all-reduce"] + report.theory["reduce-scatter"] + tp
    lines.append(f"  {'all-reduce+reduce-scatter':<25} {_size(reduced):>12}"
                 f" {_size(theory):>12}  {reduced / theory:6.2f}")
  if tp:
    lines.append(f"  (all-reduce theory: {_size(tp)} of it tensor-parallel"
                 " activations, 2 forward + 2 backward per block)")
  ratio = report.ratio()
  what = "gradient/parameter" + (" and activation" if tp else "")
  lines.append(
      f"  {what} collectives vs theory: "
      + (f"{ratio:.2f}x" if ratio is not None else "no theory (one device"
         " per batch shard and no model split)")
      + f"; metrics (scalars) apart: {_size(report.metric_bytes())}")
  if report.unknown_trip_counts:
    lines.append(f"  ({report.unknown_trip_counts} loops of unknown trip count:"
                 " their collectives are counted once)")
  if report.collectives:
    lines.append("  largest:")
    for c in report.collectives[:top]:
      shapes = ", ".join(c.shapes[:2]) + (", ..." if len(c.shapes) > 2 else "")
      where = "/".join(c.op_name.split("/")[-2:])[:40]
      lines.append(f"    {_size(c.bytes_per_step):>10}  {c.count:>3} x"
                   f" {c.kind:<18} {shapes:<28} over {c.group_size:<4} {where}")
    if len(report.collectives) > top:
      rest = report.collectives[top:]
      lines.append(f"    ... {len(rest)} more,"
                   f" {_size(sum(c.bytes_per_step for c in rest))} together")
  if report.roofline:
    r, chip = report.roofline, report.chip
    lines += [
        "",
        f"roofline ({chip['name']}: {chip['peak_flops'] / 1e12:.0f} TFLOP/s"
        f" bf16, {chip['hbm_bandwidth'] / 1e9:.0f} GB/s HBM,"
        f" {chip['ici_bandwidth'] / 1e9:.0f} GB/s ICI per chip)",
        f"  compute {_time(r['compute_s'])}, HBM {_time(r['hbm_s'])},"
        f" ICI {_time(r['ici_s'])}",
        f"  step >= {_time(r['step_s'])} ({r['bound']}-bound; no overlap:"
        f" {_time(r['no_overlap_s'])})",
    ]
  return "\n".join(lines)


def main():
  config_flag = config_lib.define_config_flag()
  topology = flags.DEFINE_string(
      "topology", None, "Compile for this TPU slice instead, e.g. v5e:4x4"
      f" ({TOPOLOGY_EXAMPLES}); needs libtpu: pip install -e '.[tpu]'.")
  cpu_devices = flags.DEFINE_integer(
      "cpu_devices", 8, "Simulated CPU devices to compile for (no"
      " --topology, on a CPU).")
  json_path = flags.DEFINE_string("json", None, "Also write the numbers here.")
  top = flags.DEFINE_integer("top", 12, "Largest collectives to list.")
  mock_data = flags.DEFINE_bool(
      "mock_data", False, "Take the dataset's shapes from TFDS mock data"
      " (tfds.testing.mock_data): for a catalog dataset not prepared here,"
      " e.g. imagenet2012; a compile needs only its shapes.")
  flags.mark_flags_as_required(["config"])
  jax.config.config_with_absl()

  def run(argv):
    del argv
    train.quiet_library_logs()
    if not topology.value:
      jax.config.update("jax_num_cpu_devices", cpu_devices.value)
    context = contextlib.nullcontext()
    if mock_data.value:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      context = tfds.testing.mock_data(num_examples=16)
    with context:
      report = inspect_step(config_flag.value, topology=topology.value,
                            config_name=flags.FLAGS["config"].serialize()
                            .partition("=")[2])
    print(format_report(report, top.value), flush=True)
    if json_path.value:
      with open(json_path.value, "w") as f:
        json.dump(report.to_json(), f, indent=2)

  app.run(run)


if __name__ == "__main__":
  main()
