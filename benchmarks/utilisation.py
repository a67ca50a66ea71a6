"""Compute utilisation: the train step's achieved FLOP/s over the measured matmul peak.

For each experiment, the ordinary train loop (`train.train_and_evaluate`, no
evaluation or checkpoint inside the run) reports `flop_s` in its summary: XLA's
cost analysis of the compiled step (loop bodies counted per iteration) times the
timed steps, over their time. The peak is `hlo.matmul_peak()`: a 2048 x 2048
float32 matmul through XLA, best of 20, measured before and after the runs. The
utilisation is flop_s / peak. `deeplearn.inspect` splits each step's FLOPs into
dots and convolutions ("matmul") and the rest (elementwise, reductions), and
gives the bytes the step touches: where the utilisation is low, those and the
batch sweep show what limits it.

mnist_mlp reads TFDS mnist, which needs a download; here it trains on
`tfds.testing.mock_data` (random images and labels, the same shapes and dtypes,
the same cost per step).

  python benchmarks/utilisation.py [--only mnist_mlp] [--sweep 12,48,192]
"""

import argparse
import contextlib
import os
import shutil
import tempfile

from absl import logging
import jax
import tensorflow_datasets as tfds

from deeplearn import config as config_lib, hlo, inspect, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# experiment -> steps per run
STEPS = {"mnist_mlp": 400, "shakespeare_char_transformer": 300,
         "shakespeare_transformer": 150}


def load(name, steps, data_dir, batch_size=None):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", f"{name}.py"))
  config.data.data_dir = data_dir
  if batch_size:
    config.data.batch_size = batch_size
  config.train.num_epochs = 0.0
  config.train.num_steps = steps
  # shorter runs than the recipe's: a warmup that fits (the FLOPs are the same)
  config.schedule.warmup_steps = min(config.schedule.warmup_steps, steps // 4)
  config.train.log_every = max(1, steps // 5)
  config.train.eval_every = 10 * steps  # the last step evaluates, after the timing
  config.train.checkpoint_every = 10 * steps
  config.train.progress = False
  return config


def measure(config, workdir, peak):
  shutil.rmtree(workdir, ignore_errors=True)
  with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
    summary = train.train_and_evaluate(config, workdir)
  report = inspect.inspect_step(config)
  steps_s = summary["examples_per_s"] / config.data.batch_size
  return dict(steps_s=steps_s, flops=summary["step_flops"], flop_s=summary["flop_s"],
              util=summary["flop_s"] / peak,
              matmul_share=report.matmul_flops / report.flops if report.flops else 0.0,
              intensity=report.flops / report.bytes_accessed if report.bytes_accessed else 0.0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="", help="Comma-separated experiments.")
  parser.add_argument("--sweep", default="12,48,192",
                      help="Batch sizes for shakespeare_char_transformer ('' = none).")
  parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: temp).")
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  tmp = tempfile.mkdtemp(prefix="utilisation_")
  data_dir = args.data_dir or os.path.join(tmp, "tfds")
  peaks = [hlo.matmul_peak()]
  print(f"matmul peak (2048^2 float32, best of 20): {peaks[0] / 1e9:.0f} GFLOP/s; "
        f"{jax.devices()[0].device_kind}, load {os.getloadavg()[0]:.1f}", flush=True)
  runs = [(n, None) for n in STEPS if not args.only or n in args.only.split(",")]
  if args.sweep and (not args.only or "sweep" in args.only.split(",")):
    runs += [("shakespeare_char_transformer", int(b)) for b in args.sweep.split(",")
             if int(b) != 12]
  rows = []
  for name, batch in runs:
    steps = STEPS[name] if not batch else max(30, STEPS[name] * 12 // batch)
    config = load(name, steps, data_dir, batch)
    mock = (tfds.testing.mock_data(num_examples=4000) if config.data.dataset == "mnist"
            else contextlib.nullcontext())
    with mock:
      r = measure(config, os.path.join(tmp, name), peaks[0])
    rows.append((name, config.data.batch_size, steps, r))
    print(f"{name} batch {config.data.batch_size}: {r['steps_s']:.1f} steps/s, "
          f"{r['flops'] / 1e9:.3f} GFLOP/step, {r['flop_s'] / 1e9:.1f} GFLOP/s = "
          f"{100 * r['util']:.1f}% of peak; matmul share of FLOPs "
          f"{100 * r['matmul_share']:.1f}%, {r['intensity']:.1f} FLOP/byte; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
  peaks.append(hlo.matmul_peak())
  print(f"matmul peak after: {peaks[1] / 1e9:.0f} GFLOP/s")
  print("\n| experiment | batch | steps | steps/s | GFLOP/step | GFLOP/s | % of peak |"
        " matmul share of FLOPs | FLOP/byte |")
  print("|---|---|---|---|---|---|---|---|---|")
  for name, batch, steps, r in rows:
    print(f"| {name} | {batch} | {steps} | {r['steps_s']:.1f} | {r['flops'] / 1e9:.3f} |"
          f" {r['flop_s'] / 1e9:.1f} | {100 * r['util']:.1f}% |"
          f" {100 * r['matmul_share']:.1f}% | {r['intensity']:.1f} |")
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
