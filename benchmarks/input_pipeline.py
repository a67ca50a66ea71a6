"""Input pipeline: grain batches/s against the train step's steps/s.

For each dataset, at its experiment's batch size, interleaved in one process:

- pipeline: `next()` on `iter(deeplearn.data.train_dataset(...))` alone, the
  numpy batches the loop gets (after 50 of warm-up);
- step: the experiment's jitted train step on preloaded device batches
  (`framework_overhead.bare_loop`), the rate at which the loop consumes them.

Their ratio is the pipeline's headroom (target: at least 10x). Then the
experiment runs through `train.train_and_evaluate` and the summary's
`data_wait_fraction` (time in `next()` over the timed log intervals; target
under 2%) is printed beside it.

  python benchmarks/input_pipeline.py [--repeats 3] [--only mnist1d]
"""

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time

from absl import logging

import framework_overhead  # benchmarks/, beside this file
from deeplearn import data, train

# dataset -> (experiment, steps the step side and the loop run, batches timed)
ROWS = {"mnist1d": ("mnist1d_cnn", 2000, 5000),
        "digits": ("digits_convnet", 1000, 5000),
        "tiny_shakespeare": ("shakespeare_char_transformer", 300, 5000)}


def pipeline_rate(config, batches):
  it = iter(data.train_dataset(config.data, seed=config.train.seed,
                               process_index=0, process_count=1))
  for _ in range(50):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches / (time.perf_counter() - t0)


def loop_data_wait(config, workdir):
  """The train loop's data_wait_fraction, and its own steps/s."""
  shutil.rmtree(workdir, ignore_errors=True)
  config.train.log_every = min(config.train.log_every,
                               config.train.num_steps // 5)
  config.train.eval_every = config.train.num_steps  # evaluation costs time only
  config.train.progress = False
  with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
    summary = train.train_and_evaluate(config, workdir)
  return (summary["data_wait_fraction"],
          summary["examples_per_s"] / config.data.batch_size)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--only", default="", help="Comma-separated datasets.")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data dir (default: a temp dir).")
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  tmp = tempfile.mkdtemp(prefix="input_pipeline_")
  data_dir = args.data_dir or os.path.join(tmp, "tfds")
  rows = []
  for dataset, (name, steps, batches) in ROWS.items():
    if args.only and dataset not in args.only.split(","):
      continue
    config = framework_overhead.load(name, data_dir, steps)
    pipe, step = [], []
    for r in range(args.repeats):
      for side in ("pipe", "step") if r % 2 == 0 else ("step", "pipe"):
        if side == "pipe":
          pipe.append(pipeline_rate(config, batches))
        else:
          step.append(framework_overhead.bare_loop(config))
      print(f"{dataset} repeat {r}: pipeline {pipe[-1]:,.0f} batches/s, step"
            f" {step[-1]:,.1f} steps/s, ratio {pipe[-1] / step[-1]:,.1f}; load"
            f" {os.getloadavg()[0]:.1f}", flush=True)
    wait, loop_rate = loop_data_wait(config, os.path.join(tmp, dataset))
    rows.append((dataset, name, config.data.batch_size,
                 statistics.median(pipe), statistics.median(step),
                 [p / s for p, s in zip(pipe, step)], wait, loop_rate))
  print("\n| dataset | experiment | batch | pipeline batches/s | step steps/s |"
        " pipeline / step (median) | per repeat | loop data wait | loop steps/s |")
  print("|---|---|---|---|---|---|---|---|---|")
  for dataset, name, batch, pipe, step, ratios, wait, loop_rate in rows:
    print(f"| {dataset} | {name} | {batch} | {pipe:,.0f} | {step:,.1f} |"
          f" {pipe / step:,.1f}x | {', '.join(f'{x:,.1f}' for x in ratios)} |"
          f" {100 * wait:.2f}% | {loop_rate:,.1f} |")
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
