"""Ablations on small real data: do the lectures' tricks show on the same budget?

Each ablation trains two arms that differ in one setting, on the same number of
steps and the same seeds, through the ordinary train loop, and reports the test
accuracy and loss and the final training loss as mean ± std over the seeds.
The digits recipes (the vision issue's acceptance runs) are measured first.

  python benchmarks/ablations.py [--seeds 0,1,2] [--only dropout_digits,ema] [--workdir DIR]

Claims (EE-559 / the course's regularisation and optimisation lectures):
dropout reduces overfitting; batch norm speeds up training; momentum with a
decaying learning rate beats plain SGD; an exponential moving average of the
parameters evaluates better than the last iterate.
"""

import argparse
import copy
import json
import os
import shutil
import tempfile

from absl import logging
import ml_collections
import numpy as np

from deeplearn import config as config_lib, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = ("digits_convnet", "digits_mlp_maxout")
# Plain SGD on the digits convnet, 300 steps: short enough that speed shows.
SGD = {"optimizer.name": "sgd", "optimizer.learning_rate": 0.05, "train.num_steps": 300}
MLP = ml_collections.ConfigDict({"name": "mlp", "num_classes": 10, "hidden_sizes": (256, 256)})
# name -> (experiment, shared overrides, {arm: overrides}); the first arm is the baseline.
ABLATIONS = {
    "dropout_digits": ("digits_mlp_maxout", {}, {
        "no dropout": {"model.dropout_rate": 0.0, "model.input_dropout_rate": 0.0},
        "dropout 0.5 (inputs 0.2)": {}}),
    "dropout_mnist1d": ("mnist1d_cnn", {"model": MLP, "optimizer.learning_rate": 1e-3,
                                        "train.num_steps": 4000}, {
        "no dropout": {},
        "dropout 0.5": {"model.dropout_rate": 0.5}}),
    "batch_norm": ("digits_convnet", SGD, {
        "no batch norm": {},
        "batch norm": {"model.batch_norm": True}}),
    "momentum_decay": ("digits_convnet", SGD, {
        "plain SGD, constant lr": {},
        "momentum 0.9 + cosine decay": {"optimizer.momentum": 0.9, "schedule.name": "cosine"}}),
    # A large constant step: the last iterate is noisy.
    "ema": ("digits_convnet", {**SGD, "optimizer.learning_rate": 0.1, "optimizer.momentum": 0.9,
                               "optimizer.ema_decay": 0.98}, {
        "raw parameters": {},
        "EMA of parameters (0.98)": {"optimizer.averaging": "ema"}}),
}


def run(experiment, overrides, seed, workdir):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", f"{experiment}.py"))
  with config.unlocked():
    for key, value in overrides.items():
      *parents, leaf = key.split(".")
      node = config
      for parent in parents:
        node = node[parent]
      node[leaf] = copy.deepcopy(value)  # never the shared table's own ConfigDict
  steps = config.train.num_steps
  config.train.update(seed=seed, progress=False, eval_every=steps, checkpoint_every=steps)
  shutil.rmtree(workdir, ignore_errors=True)
  summary = train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    train_loss = [r for r in map(json.loads, f) if r["split"] == "train"][-1]["loss"]
  return {"accuracy": 100 * summary["final"]["accuracy"], "loss": summary["final"]["loss"],
          "train_loss": train_loss, "wall_s": summary["wall_s"], "steps": summary["steps"]}


def per_seed(rows):
  return ", ".join(f"{r['accuracy']:.1f}" for r in rows)


def spread(rows, key, fmt):
  values = np.array([r[key] for r in rows])
  return f"{values.mean():{fmt}} ± {values.std():{fmt}}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None, help="Parent of the runs (default: a temp dir).")
  parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds.")
  parser.add_argument("--only", default="",
                      help=f"Comma-separated names from {[*RECIPES, *ABLATIONS]}.")
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  parent = args.workdir or tempfile.mkdtemp(prefix="ablations_")
  seeds = [int(s) for s in args.seeds.split(",")]
  only = args.only.split(",") if args.only else [*RECIPES, *ABLATIONS]

  recipes = [name for name in RECIPES if name in only]
  if recipes:
    print("\n| experiment | steps | test accuracy % per seed | mean ± std | wall s per run |")
    print("|---|---|---|---|---|")
  for name in recipes:
    rows = [run(name, {}, seed, os.path.join(parent, f"{name}_{seed}")) for seed in seeds]
    print(f"| {name} | {rows[0]['steps']:,} | {per_seed(rows)} |"
          f" {spread(rows, 'accuracy', '.1f')} | {spread(rows, 'wall_s', '.1f')} |", flush=True)

  ablations = [name for name in ABLATIONS if name in only]
  if ablations:
    print("\n| ablation | arm | steps | test accuracy % per seed | test accuracy % |"
          " test loss | final train loss | wall s per run |")
    print("|---|---|---|---|---|---|---|---|")
  for name in ablations:
    experiment, shared, arms = ABLATIONS[name]
    for i, (arm, overrides) in enumerate(arms.items()):
      rows = [run(experiment, {**shared, **overrides}, seed,
                  os.path.join(parent, f"{name}_{i}_{seed}")) for seed in seeds]
      print(f"| {name} | {arm} | {rows[0]['steps']:,} | {per_seed(rows)} |"
            f" {spread(rows, 'accuracy', '.1f')} | {spread(rows, 'loss', '.3f')} |"
            f" {spread(rows, 'train_loss', '.3f')} | {spread(rows, 'wall_s', '.1f')} |",
            flush=True)


if __name__ == "__main__":
  main()
