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

import dataclasses
import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from deeplearn import step as step_lib
from deeplearn.hlo import HloModule, loop_factor, parse_collectives
from deeplearn.inspect.report import Report, format_report, roofline  # noqa: F401 (the API)
from deeplearn.inspect.theory import (gradient_theory, moe_all_to_all_theory,  # noqa: F401
                                      tp_activation_theory)
from deeplearn.inspect.topology import CHIPS, GiB, placed, topology_devices  # noqa: F401
from deeplearn.parallel import forms
from deeplearn.schemes import supervised


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
    devices = placed(config, topology_devices(topology))
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
