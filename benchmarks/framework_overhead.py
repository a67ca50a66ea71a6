"""Framework overhead: the full train loop against a bare loop of its step.

For each experiment, in one process and interleaved (full, bare, bare, full,
...), so that load on a shared machine hits both sides alike:

- full: `deeplearn.train.train_and_evaluate` as users run it (grain pipeline,
  sharding, metric fetches every log interval, checkpoints, evaluation,
  progress bar). Its steps/s is the summary's (examples_per_s / batch): every
  log interval after the first (which compiles), evaluation and the blocking
  part of checkpoint saves left out; "wall" is (steps - 1) / (wall_s -
  startup_s), everything after the first step included.
- bare: the same jitted step (`step_lib.make_train_step`) in a Python loop over
  batches of the same pipeline, put on the devices before the clock starts;
  one block at the end.

mnist_convnet (the EE-559 lecture convnet) reads TFDS mnist, which needs a
download; here it trains on `tfds.testing.mock_data` (random MNIST-shaped
images and labels, same shapes and dtypes), which costs the same per step.

  python benchmarks/framework_overhead.py [--repeats 3] [--only mnist1d_cnn]
"""

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time

from absl import logging
import jax
import tensorflow_datasets as tfds

from deeplearn import config as config_lib, data, step as step_lib, train
from deeplearn.schemes import supervised
from deeplearn.parallel import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# experiment -> steps per run (mnist1d_cnn: its whole 6,000-step recipe).
STEPS = {"mnist1d_cnn": 6000, "mnist_convnet": 400}


def load(name, data_dir, steps):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", f"{name}.py"))
  config.data.data_dir = data_dir
  config.train.num_epochs = 0.0
  config.train.num_steps = steps
  return config


def full_loop(config, workdir):
  """The train loop's own steps/s and its wall-clock steps/s after step 1."""
  shutil.rmtree(workdir, ignore_errors=True)
  with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
    summary = train.train_and_evaluate(config, workdir)  # with progress bar
  steps = summary["steps"]
  return (summary["examples_per_s"] / config.data.batch_size,
          (steps - 1) / (summary["wall_s"] - summary["startup_s"]),
          summary["data_wait_fraction"])


def bare_loop(config):
  """Steps/s of the jitted step over preloaded device batches."""
  run = supervised.build(config)
  step = step_lib.make_train_step(run)
  it = iter(data.train_dataset(config.data, seed=config.train.seed,
                               process_index=0, process_count=1))
  batches = [sharding.global_batch(next(it), run.batch_sharding)
             for _ in range(run.num_steps)]
  state, _, _ = step(run.init_fn(config.train.seed), batches[0])  # compiles
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for batch in batches[1:]:
    state, _, _ = step(state, batch)
  jax.block_until_ready(state)
  return (len(batches) - 1) / (time.perf_counter() - t0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--only", default="", help="Comma-separated experiments.")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data dir for mnist1d (default: a temp dir).")
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  tmp = tempfile.mkdtemp(prefix="framework_overhead_")
  data_dir = args.data_dir or os.path.join(tmp, "tfds")
  names = [n for n in STEPS if not args.only or n in args.only.split(",")]
  rows = []
  for name in names:
    config = load(name, data_dir, STEPS[name])
    mock = (tfds.testing.mock_data(num_examples=2000)
            if name == "mnist_convnet" else contextlib.nullcontext())
    full, wall, bare, wait = [], [], [], []
    with mock:
      for r in range(args.repeats):
        order = ("full", "bare") if r % 2 == 0 else ("bare", "full")
        for side in order:
          if side == "full":
            loop_rate, wall_rate, fraction = full_loop(
                config, os.path.join(tmp, f"{name}_{r}"))
            full.append(loop_rate)
            wall.append(wall_rate)
            wait.append(fraction)
          else:
            bare.append(bare_loop(config))
        print(f"{name} repeat {r}: full {full[-1]:,.0f} steps/s (wall"
              f" {wall[-1]:,.0f}), bare {bare[-1]:,.0f} steps/s, ratio"
              f" {full[-1] / bare[-1]:.3f}; load {os.getloadavg()[0]:.1f}",
              flush=True)
    rows.append((name, STEPS[name], statistics.median(full),
                 statistics.median(wall), statistics.median(bare),
                 [f / b for f, b in zip(full, bare)], statistics.median(wait)))
  print("\n| experiment | steps | full loop steps/s | full, wall after step 1 |"
        " bare steps/s | full / bare (median) | per repeat | full, wall / bare |"
        " data wait |")
  print("|---|---|---|---|---|---|---|---|---|")
  for name, steps, full, wall, bare, ratios, wait in rows:
    print(f"| {name} | {steps:,} | {full:,.0f} | {wall:,.0f} | {bare:,.0f} |"
          f" {full / bare:.3f} | {', '.join(f'{x:.3f}' for x in ratios)} |"
          f" {wall / bare:.3f} | {100 * wait:.1f}% |")
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
