"""Quantisation and low precision, measured: fp32, bf16 training, int8 PTQ,
int4-weight PTQ and int8 QAT on three models, with sizes on disk and CPU
inference speed of fp32 against int8.

For each experiment and seed it trains fp32, bf16 (config.model.dtype) and
int8 QAT (config.quantization.mode = "qat") runs through the ordinary train
loop, then quantises the fp32 run after training (deeplearn.evaluate's
`quantize_checkpoint`, the code path of `--quantize int8|int4`). Bytes on
disk are those of the stored weights (WORKDIR/quantized/<name>/arrays, the
float ones stored the same way). Inference examples/s: the jitted forward
pass of the fp32 and the int8 PTQ model on one eval batch, timed in turn
(fp32, int8, fp32, ...), `--repeats` times, medians. Then the optimized HLO
of the int8 model's forward pass says whether XLA:CPU runs its dots and
convolutions on int8 operands or converts them to float first, and the CNN
zoo's parameter counts give its sizes at 32 and 8 bits.

  python benchmarks/quantization.py [--seeds 0,1,2] [--transformer_steps 600]
  python benchmarks/quantization.py --tiny   (the :tiny variants, a smoke test)
"""

import argparse
import dataclasses
import os
import re
import shutil
import statistics
import tempfile
import time

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deeplearn import (checkpoint, config as config_lib, data, evaluate, models,
                       quantization, step as step_lib, train)
from deeplearn.models import layers
from deeplearn.schemes import supervised

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = ("digits_convnet", "mnist1d_cnn", "shakespeare_char_transformer")
# (experiment, title, model field overrides): GoogLeNet with and without the
# two auxiliary classifiers that only training uses.
ZOO = (("imagenet_inception_v1", "GoogLeNet (Inception v1), with aux heads", {}),
       ("imagenet_inception_v1", "GoogLeNet (Inception v1), inference",
        {"aux_heads": False}),
       ("imagenet_alexnet", "AlexNet", {}), ("imagenet_resnet50", "ResNet-50", {}))


def load(name: str, tiny: bool):
  return config_lib.from_file(os.path.join(ROOT, "experiments", f"{name}.py")
                              + (":tiny" if tiny else ""))


def metric_of(name: str) -> str:
  return "loss" if "transformer" in name else "accuracy"


def train_variant(name, variant, seed, parent, args):
  """Trains one run; returns (workdir, final metrics, wall s)."""
  config = load(name, args.tiny)
  with config.unlocked():
    config.train.seed = seed
    config.train.progress = False
    config.train.checkpoint_every = 10 ** 9  # the final checkpoint only
    if "transformer" in name and not args.tiny and args.transformer_steps:
      config.train.num_steps = args.transformer_steps
      config.train.eval_every = args.transformer_steps
    if variant == "bf16":
      config.model.dtype = "bfloat16"
    if variant == "qat_int8":
      config.quantization.mode = "qat"
      config.quantization.rules = ((".*", "int8", "int8"),)
  workdir = os.path.join(parent, f"{name}_{variant}_seed{seed}")
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.time()
  summary = train.train_and_evaluate(config, workdir)
  return workdir, summary["final"], time.time() - start


def forward_fns(workdir):
  """(fp32 fn, int8 fn, fp32 variables, int8 variables, inputs, kernels):
  the eval-mode forward passes of a finished fp32 run and its int8 PTQ
  model (as `quantize_checkpoint` builds it), and one eval batch."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = config_lib.from_json(f.read())
  run = supervised.build(config)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  state = ckpt.restore(ckpt.latest_step(), step_lib.abstract_state(run))
  ckpt.close()
  base = run.task
  qtask = dataclasses.replace(
      base, model=quantization.ptq_model(quantization.PRESETS["int8"],
                                         base.model)[0])
  fvars = {"params": state.params, **state.model_state}
  qvars = {"params": quantization.quantize_params(qtask, state.params),
           **state.model_state}
  batch = next(iter(data.eval_dataset(config.data, process_index=0,
                                      process_count=1)))
  inputs = jnp.asarray(batch["inputs"])

  def make(model, kernels):
    fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
    def call(v, x):
      with layers.Kernels(kernels), nn.logical_axis_rules(run.rules):
        return fn(v, x)
    call.lower = lambda v, x: _lower(fn, kernels, run.rules, v, x)
    return call

  return (make(base.model, config.get("kernels")),
          make(qtask.model, quantization.PTQ_KERNELS),
          make(base.model, quantization.PTQ_KERNELS), fvars, qvars, inputs)


def _lower(fn, kernels, rules, v, x):
  with layers.Kernels(kernels), nn.logical_axis_rules(rules):
    return fn.lower(v, x)


def examples_per_s(fns_vars, inputs, repeats: int, min_s: float = 0.5):
  """Medians over `repeats` rounds; each round times every fn in turn."""
  times = {name: [] for name in fns_vars}
  for name, (fn, v) in fns_vars.items():  # compile, warm up, choose n
    jax.block_until_ready(fn(v, inputs))
  n = {}
  for name, (fn, v) in fns_vars.items():
    start = time.perf_counter()
    jax.block_until_ready(fn(v, inputs))
    n[name] = max(1, int(min_s / max(time.perf_counter() - start, 1e-6)))
  for _ in range(repeats):
    for name, (fn, v) in fns_vars.items():
      start = time.perf_counter()
      for _ in range(n[name]):
        out = fn(v, inputs)
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - start) / n[name])
  return {name: inputs.shape[0] / statistics.median(t) for name, t in times.items()}


_DEF = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = ([a-z0-9]+)\[")
_OP = re.compile(r"= ([a-z0-9]+)\[[^\]]*\]\S* (dot|convolution)\(([^)]*)\)")


def hlo_ops(lowered) -> list[str]:
  """'dot: s8 x s8 -> s32' for every dot / convolution in the optimized HLO
  (operand types looked up in the computation that holds it), and
  'custom-call: NAME' for library calls (oneDNN, XNNPACK)."""
  text = lowered.compile().as_text()
  found, types = set(), {}
  for line in text.splitlines():
    if line and not line[0].isspace():  # a new computation
      types = {}
    definition = _DEF.match(line)
    if definition:
      types[definition.group(1)] = definition.group(2)
    op = _OP.search(line)
    if op:
      result, kind, operands = op.groups()
      names = re.findall(r"%([\w.\-]+)", operands)
      found.add(f"{kind}: {' x '.join(types.get(n, '?') for n in names)}"
                f" -> {result}")
  found |= {f"custom-call: {t}" for t in
            re.findall(r'custom_call_target="([^"]+)"', text)}
  return sorted(found)


def dot_speeds(sizes=(512, 1024, 2048), repeats: int = 3):
  """GOP/s of one n x n x n product on XLA:CPU: float32, and int8 x int8
  with an int32 accumulator (what the int8 PTQ models' dense layers compile
  to), timed in turn, medians."""
  rows = []
  for n in sizes:
    key = jax.random.PRNGKey(n)
    a = jax.random.normal(key, (n, n))
    fns = {
        "f32": (jax.jit(jnp.dot), (a, a.T)),
        "s8": (jax.jit(lambda x, y: jax.lax.dot_general(
            x, y, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32)),
               ((127 * a.clip(-1, 1)).astype(jnp.int8),) * 2)}
    times = {k: [] for k in fns}
    for k, (fn, args) in fns.items():
      jax.block_until_ready(fn(*args))
    for _ in range(repeats):
      for k, (fn, args) in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times[k].append(time.perf_counter() - start)
    rows.append((n, {k: 2 * n ** 3 / statistics.median(t) / 1e9
                     for k, t in times.items()}))
  return rows


def zoo_sizes():
  rows = []
  for name, title, fields in ZOO:
    config = load(name, False)
    config.model.update(fields)
    model = models.get_model(config.model)
    shapes = jax.eval_shape(
        lambda: model.init({"params": jax.random.PRNGKey(0),
                            "dropout": jax.random.PRNGKey(1)},
                           jnp.zeros((1, 224, 224, 3)), train=False))
    count = sum(int(np.prod(x.shape)) for x in
                jax.tree.leaves(nn.unbox(shapes["params"])))
    rows.append((title, name, count))
  return rows


def print_dots(repeats: int):
  print("\n## One n x n x n matmul on XLA:CPU, GOP/s (alternating,"
        f" {repeats} repeats, medians)\n")
  print("| n | float32 | int8 x int8 -> int32 | int8 / float32 |")
  print("|---|---|---|---|")
  for n, speed in dot_speeds(repeats=repeats):
    print(f"| {n} | {speed['f32']:.1f} | {speed['s8']:.1f} |"
          f" {speed['s8'] / speed['f32']:.2f} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--only", default="", help="Comma-separated experiments.")
  parser.add_argument("--transformer_steps", type=int, default=600,
                      help="Steps of the character Transformer (its recipe:"
                      " 2,000); 0 = the recipe's.")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tiny", action="store_true")
  parser.add_argument("--only_dots", action="store_true",
                      help="Only the float32 / int8 matmul speeds.")
  args = parser.parse_args()
  if args.only_dots:
    print_dots(args.repeats)
    return
  logging.set_verbosity(logging.WARNING)
  parent = args.workdir or tempfile.mkdtemp(prefix="quantization_")
  seeds = [int(s) for s in args.seeds.split(",")]
  names = [n for n in EXPERIMENTS if not args.only or n in args.only.split(",")]
  t0 = time.time()
  rows, speed_rows, hlo = [], [], {}
  for name in names:
    metric = metric_of(name)
    for seed in seeds:
      fp32_dir = None
      for variant in ("fp32", "bf16", "qat_int8"):
        workdir, final, wall = train_variant(name, variant, seed, parent, args)
        result = evaluate.quantize_checkpoint(workdir, "int8")
        size = result["bytes_on_disk"]["float32"]
        rows.append((name, seed, variant, final[metric], size, wall))
        print(rows[-1], flush=True)
        if variant == "qat_int8":  # the QAT weights stored as real int8
          rows.append((name, seed, "qat_int8_stored", result["int8"][metric],
                       result["bytes_on_disk"]["int8"], None))
        if variant == "fp32":
          fp32_dir = workdir
          rows.append((name, seed, "ptq_int8", result["int8"][metric],
                       result["bytes_on_disk"]["int8"], None))
          q4 = evaluate.quantize_checkpoint(workdir, "int4")
          rows.append((name, seed, "ptq_int4w", q4["int4"][metric],
                       q4["bytes_on_disk"]["int4"], None))
          print(rows[-2:], flush=True)
      f32, i8, f32_xla, fvars, qvars, inputs = forward_fns(fp32_dir)
      speeds = examples_per_s({"fp32": (f32, fvars), "int8": (i8, qvars),
                               "fp32_xla": (f32_xla, fvars)}, inputs,
                              args.repeats)
      speed_rows.append((name, seed, inputs.shape, speeds))
      print(speed_rows[-1], flush=True)
      if name not in hlo:
        hlo[name] = {"fp32": hlo_ops(f32.lower(fvars, inputs)),
                     "int8": hlo_ops(i8.lower(qvars, inputs))}
  total = time.time() - t0

  print(f"\n## Accuracy / validation loss and size on disk ({len(seeds)} seeds"
        f" {seeds}; total wall {total:.0f} s)\n")
  print("| experiment | variant | metric | mean ± std | per seed | bytes on disk"
        " (weights) | train wall s (mean) |")
  print("|---|---|---|---|---|---|---|")
  for name in names:
    for variant in ("fp32", "bf16", "ptq_int8", "ptq_int4w", "qat_int8",
                    "qat_int8_stored"):
      sel = [r for r in rows if r[0] == name and r[2] == variant]
      vals = np.array([r[3] for r in sel])
      walls = [r[5] for r in sel if r[5] is not None]
      scale = 1 if metric_of(name) == "loss" else 100
      unit = "val loss" if scale == 1 else "test acc %"
      print(f"| {name} | {variant} | {unit} | {scale * vals.mean():.3f} ±"
            f" {scale * vals.std():.3f} | "
            + ", ".join(f"{scale * v:.3f}" for v in vals)
            + f" | {sel[0][4]:,} | "
            + (f"{np.mean(walls):.1f}" if walls else "- (no training)") + " |")
  print("\n## CPU inference, examples/s (one eval batch, jitted forward,"
        f" alternating, {args.repeats} repeats, medians)\n")
  print("| experiment | seed | batch | fp32 (run's kernels) | fp32 (xla"
        " kernels) | int8 PTQ | int8 / fp32 |")
  print("|---|---|---|---|---|---|---|")
  for name, seed, shape, s in speed_rows:
    print(f"| {name} | {seed} | {shape[0]} | {s['fp32']:,.0f} |"
          f" {s['fp32_xla']:,.0f} | {s['int8']:,.0f} |"
          f" {s['int8'] / s['fp32']:.2f} |")
  print("\n## What XLA:CPU compiles (optimized HLO of the forward pass)\n")
  for name, ops in hlo.items():
    for kind, found in ops.items():
      print(f"- {name} {kind}: " + "; ".join(found))
  print_dots(args.repeats)
  print("\n## The CNN zoo at 32 and 8 bits (parameters x 4 / x 1 byte)\n")
  print("| model | experiment | parameters | float32 MB | int8 MB |")
  print("|---|---|---|---|---|")
  for title, name, count in zoo_sizes():
    print(f"| {title} | {name} | {count:,} | {4 * count / 1e6:.1f} |"
          f" {count / 1e6:.1f} |")


if __name__ == "__main__":
  main()
