"""MNIST-1D: the paper's PyTorch training loop against deeplearn's, time to 94% test accuracy.

Reference side: the CNN (`ConvBase`: three stride-2 Conv1d + relu, a linear classifier,
5,210 parameters) and `train_model` of greydanus/mnist1d (notebooks/models.py and
notebooks/train.py), re-typed here with the same semantics: Adam 1e-2, batch 100 taken
in order from the training set (`bix = step * 100 % 4000`), `loss.item()` every step,
and every 250 steps an evaluation (test loss, train and test accuracy); PyTorch's
default initialisation, `torch.manual_seed(seed)`.

deeplearn side: `experiments/mnist1d_cnn.py` through `train.train_and_evaluate`, as a
user runs it (grain pipeline reshuffled every epoch, checkpoints every 1,000 steps,
progress bar), with `eval_every=250` to see the same steps; seed `seed`;
`--sequential` takes the batches in the reference's order (`config.data.shuffle=False`).

Both read the published data (`mnist1d` regenerates it exactly: 4,000 train, 1,000
test). "time to 94%" runs from the start of each side's training call to the end of
the first evaluation at or above 94% test accuracy (deeplearn's includes building the
input pipeline and compiling; `metrics.jsonl` records carry their write time). Seeds
alternate sides, reference first.

  pip install -e '.[bench]'   # torch==2.13.0, CPU
  python benchmarks/mnist1d_vs_reference.py [--seeds 0,1,2,3,4] [--steps 6000]
"""

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time

from absl import logging
import mnist1d.data
import numpy as np
import torch
from torch import nn

from deeplearn import config as config_lib, metrics, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 94.0  # the issue's; --also adds others
EVAL_EVERY = 250


class ConvBase(nn.Module):  # greydanus/mnist1d notebooks/models.py
  def __init__(self, output_size=10, channels=25, linear_in=125):
    super().__init__()
    self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
    self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
    self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
    self.linear = nn.Linear(linear_in, output_size)

  def forward(self, x):
    x = x.view(-1, 1, x.shape[-1])
    h = self.conv3(self.conv2(self.conv1(x).relu()).relu()).relu()
    return self.linear(h.view(h.shape[0], -1))


def accuracy(model, inputs, targets):
  preds = model(inputs).argmax(-1).cpu().numpy()
  return 100 * np.mean(preds == targets.cpu().numpy())


def reference(dataset, seed, steps):
  """notebooks/train.py's train_model: [(step, test accuracy, seconds)], steps/s."""
  torch.manual_seed(seed)
  np.random.seed(seed)
  model = ConvBase()
  criterion = nn.CrossEntropyLoss()
  optimizer = torch.optim.Adam(model.parameters(), 1e-2, weight_decay=0)
  x_train, x_test = torch.Tensor(dataset["x"]), torch.Tensor(dataset["x_test"])
  y_train, y_test = torch.LongTensor(dataset["y"]), torch.LongTensor(dataset["y_test"])
  evals = []
  t0 = time.perf_counter()
  for step in range(steps + 1):
    bix = (step * 100) % len(x_train)
    x, y = x_train[bix:bix + 100], y_train[bix:bix + 100]
    loss = criterion(model(x), y)
    loss.item()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    if step % EVAL_EVERY == 0:
      criterion(model(x_test), y_test).item()
      accuracy(model, x_train, y_train)
      evals.append((step, accuracy(model, x_test, y_test), time.perf_counter() - t0))
  return evals, steps / (time.perf_counter() - t0)


def ours(seed, steps, data_dir, workdir, sequential=False):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", "mnist1d_cnn.py"))
  config.data.data_dir = data_dir
  config.data.shuffle = not sequential
  config.train.seed = seed
  config.train.num_steps = steps
  config.train.eval_every = EVAL_EVERY
  shutil.rmtree(workdir, ignore_errors=True)
  t0 = time.time()
  with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
    summary = train.train_and_evaluate(config, workdir)
  records = metrics.read_records(os.path.join(workdir, "metrics.jsonl"), "eval")
  evals = [(r["step"], 100 * r["accuracy"], r["time"] - t0) for r in records]
  return evals, summary["examples_per_s"] / config.data.batch_size


def first_at(evals, target):
  # 940 of 1,000 is 0.94 in float32, 93.99999... in percent: compare at 0.01
  return next(((step, t) for step, acc, t in evals if acc >= target - 0.01), (None, None))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0,1,2,3,4")
  parser.add_argument("--steps", type=int, default=6000)
  parser.add_argument("--also", default="93", help="More test-accuracy targets, %%.")
  parser.add_argument("--sequential", action="store_true",
                      help="Ours takes batches in the split's order, as the reference"
                           " (config.data.shuffle=False), instead of reshuffling.")
  parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: temp).")
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  tmp = tempfile.mkdtemp(prefix="mnist1d_vs_reference_")
  data_dir = args.data_dir or os.path.join(tmp, "tfds")
  dataset = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
  also = [float(a) for a in args.also.split(",") if a]
  print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"load {os.getloadavg()[0]:.1f}", flush=True)
  ours(0, 300, data_dir, os.path.join(tmp, "warm"))  # builds the TFDS data once
  rows = []
  for seed in (int(s) for s in args.seeds.split(",")):
    for side in ("reference", "deeplearn"):
      if side == "reference":
        evals, rate = reference(dataset, seed, args.steps)
      else:
        evals, rate = ours(seed, args.steps, data_dir, os.path.join(tmp, f"run{seed}"),
                           args.sequential)
      step, t = first_at(evals, TARGET)
      best = max(evals, key=lambda e: e[1])
      rows.append((side, seed, rate, step, t, evals[-1][1], best, evals[-1][2],
                   [first_at(evals, a) for a in also]))
      print(f"{side} seed {seed}: {rate:,.0f} steps/s, {TARGET:.0f}% at step {step} "
            f"({'-' if t is None else f'{t:.2f} s'}), final {evals[-1][1]:.1f}%, best "
            f"{best[1]:.1f}% @ {best[0]}, total {evals[-1][2]:.2f} s; load "
            f"{os.getloadavg()[0]:.1f}", flush=True)
  extra = "".join(f" {a:g}%: step, s |" for a in also)
  print(f"\n| side | seed | steps/s | {TARGET:g}%: step | {TARGET:g}%: s |{extra}"
        f" final % | best % (step) | {args.steps:,} steps + evals s |")
  print("|---" * (8 + len(also)) + "|")
  for side, seed, rate, step, t, final, best, total, more in rows:
    cells = "".join(f" {'-' if st is None else f'{st}, {tt:.2f}'} |" for st, tt in more)
    print(f"| {side} | {seed} | {rate:,.0f} | {step or 'not reached'} |"
          f" {'-' if t is None else f'{t:.2f}'} |{cells} {final:.1f} |"
          f" {best[1]:.1f} ({best[0]}) | {total:.2f} |")
  for side in ("reference", "deeplearn"):
    mine = [r for r in rows if r[0] == side]
    for i, target in enumerate([TARGET] + also):
      times = [(r[4] if i == 0 else r[8][i - 1][1]) for r in mine]
      times = [t for t in times if t is not None]
      print(f"{side}: {target:g}% reached in {len(times)} of {len(mine)} seeds, median "
            f"time {statistics.median(times) if times else float('nan'):.2f} s")
    print(f"{side}: median {statistics.median(r[2] for r in mine):,.0f} steps/s, median "
          f"final {statistics.median(r[5] for r in mine):.1f}%")
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
