"""Reproduces the MNIST-1D paper table (Greydanus 2020) with deeplearn.

Trains the four reference models with the paper's settings through the
ordinary train loop (the same code path as `python -m deeplearn.train`) and
prints test accuracy beside the paper's figure, with wall time per run.

  python benchmarks/mnist1d_table.py [--workdir /tmp/mnist1d_table] [--seeds 0]
"""

import argparse
import os
import shutil
import tempfile

from absl import logging
import numpy as np

from deeplearn import config as config_lib, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (experiment, the paper's test accuracy in %)
ROWS = (("mnist1d_logreg", 32), ("mnist1d_mlp", 68), ("mnist1d_cnn", 94),
        ("mnist1d_gru", 91))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None,
                      help="Parent of the runs' workdirs (default: a temp dir).")
  parser.add_argument("--seeds", default="0",
                      help="Comma-separated seeds; each model runs per seed.")
  parser.add_argument("--only", default="", help="Comma-separated experiments.")
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  parent = args.workdir or tempfile.mkdtemp(prefix="mnist1d_table_")
  seeds = [int(s) for s in args.seeds.split(",")]
  rows = [r for r in ROWS if not args.only or r[0] in args.only.split(",")]
  table = []
  for name, paper in rows:
    for seed in seeds:
      config = config_lib.from_file(os.path.join(ROOT, "experiments",
                                                 f"{name}.py"))
      config.train.seed = seed
      config.train.progress = False
      workdir = os.path.join(parent, f"{name}_seed{seed}")
      shutil.rmtree(workdir, ignore_errors=True)
      summary = train.train_and_evaluate(config, workdir)
      table.append((name, seed, summary["num_params"], paper,
                    100 * summary["final"]["accuracy"],
                    100 * summary["best"]["value"], summary["best"]["step"],
                    summary["steps"], summary["wall_s"]))
  print("\n| experiment | seed | params | paper % | final % | best % (step) |"
        " steps | wall s |")
  print("|---|---|---|---|---|---|---|---|")
  for name, seed, params, paper, final, best, best_step, steps, wall in table:
    print(f"| {name} | {seed} | {params:,} | {paper} | {final:.1f} |"
          f" {best:.1f} ({best_step}) | {steps:,} | {wall:.1f} |")
  if len(seeds) > 1:
    print("\n| experiment | paper % | final %, mean ± std over seeds |"
          " within 3 points |")
    print("|---|---|---|---|")
    for name, paper in rows:
      finals = np.array([row[4] for row in table if row[0] == name])
      mean = finals.mean()
      print(f"| {name} | {paper} | {mean:.1f} ± {finals.std():.1f} |"
            f" {'yes' if abs(mean - paper) <= 3 else 'NO'} |")


if __name__ == "__main__":
  main()
