"""The EE-559 lecture convnet: PyTorch's loop against deeplearn's, examples per second.

PyTorch side: the lecture's own model and loop (F. Fleuret, EE-559 "Deep learning",
EPFL, lecture 4.6 / practical 4): conv 5x5x32 -> max-pool 3 -> relu -> conv 5x5x64 ->
max-pool 2 -> relu -> fc 200 -> relu -> fc 10, `nn.CrossEntropyLoss`, `model.zero_grad()`,
`loss.backward()`, `p.data.sub_(eta * p.grad.data)`, batch 100 by `narrow` over a
preloaded float32 tensor, lr 0.1, torch's default threads (one per core).

deeplearn side, the same model (`experiments/mnist_convnet.py`), float32, batch 100:
- step: the train step (`step_lib.make_train_step`) in a Python loop over the same
  batches preloaded on the device, one block at the end (the lecture loop's
  counterpart: data already in memory);
- loop: `train.train_and_evaluate` as users run it (grain pipeline, metrics,
  progress bar; TFDS mnist needs a download, so `tfds.testing.mock_data` stands in),
  its summary's examples/s (log intervals after the first).

Both sides train on the same MNIST-shaped data (random images, standardized, and
labels), alternating for `--repeats` rounds so that load on a shared machine hits
both alike. The floor is the machine: `hlo.matmul_peak()` over the step's FLOPs
per example (XLA's cost analysis).

  pip install -e '.[bench]'   # torch==2.13.0, CPU
  python benchmarks/lecture_convnet_vs_torch.py [--repeats 3] [--examples 10000]
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
import numpy as np
import tensorflow_datasets as tfds
import torch
from torch import nn
from torch.nn import functional as F

from deeplearn import config as config_lib, data, hlo, step as step_lib, train
from deeplearn.schemes import supervised

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 100


class Net(nn.Module):  # the lecture's
  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 32, kernel_size=5)
    self.conv2 = nn.Conv2d(32, 64, kernel_size=5)
    self.fc1 = nn.Linear(256, 200)
    self.fc2 = nn.Linear(200, 10)

  def forward(self, x):
    x = F.relu(F.max_pool2d(self.conv1(x), kernel_size=3, stride=3))
    x = F.relu(F.max_pool2d(self.conv2(x), kernel_size=2, stride=2))
    x = F.relu(self.fc1(x.view(-1, 256)))
    return self.fc2(x)


def torch_epoch(model, train_input, train_target, eta=0.1):
  """One pass of the lecture's loop; examples/s."""
  criterion = nn.CrossEntropyLoss()
  t0 = time.perf_counter()
  for b in range(0, train_input.size(0), BATCH):
    output = model(train_input.narrow(0, b, BATCH))
    loss = criterion(output, train_target.narrow(0, b, BATCH))
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
      for p in model.parameters():
        p.data.sub_(eta * p.grad.data)
  return train_input.size(0) / (time.perf_counter() - t0)


def ours_step(run, step, state, batches):
  """Examples/s of the jitted step over preloaded device batches; the new state."""
  t0 = time.perf_counter()
  for batch in batches:
    state, _, _ = step(state, batch)
  jax.block_until_ready(state)
  return len(batches) * BATCH / (time.perf_counter() - t0), state


def ours_loop(config, workdir):
  shutil.rmtree(workdir, ignore_errors=True)
  with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
    summary = train.train_and_evaluate(config, workdir)
  return summary["examples_per_s"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--examples", type=int, default=10000, help="Per timed pass.")
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  tmp = tempfile.mkdtemp(prefix="lecture_convnet_")
  # TFDS mnist needs a download: mock data of the same shapes, for the whole run
  # (supervised.build reads the dataset's info, the loop side its examples).
  with tfds.testing.mock_data(num_examples=args.examples):
    measure(args, tmp)
  shutil.rmtree(tmp, ignore_errors=True)


def measure(args, tmp):
  """Builds both sides, alternates them `args.repeats` times, prints the table."""
  rng = np.random.default_rng(0)
  images = rng.standard_normal((args.examples, 28, 28, 1)).astype(np.float32)
  labels = rng.integers(0, 10, args.examples).astype(np.int32)

  torch.manual_seed(0)
  model = Net()
  train_input = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())  # NCHW
  train_target = torch.from_numpy(labels.astype(np.int64))

  config = config_lib.from_file(os.path.join(ROOT, "experiments", "mnist_convnet.py"))
  config.data.data_dir = os.path.join(tmp, "tfds")
  config.train.num_epochs = 0.0
  config.train.num_steps = args.examples // BATCH
  config.train.update(log_every=20, eval_every=10 ** 6, checkpoint_every=10 ** 6,
                      progress=False)
  run = supervised.build(config)
  step = step_lib.make_train_step(run)
  # The pipeline's batch layout (keys, dtypes), filled with the shared arrays.
  layout = next(iter(data.train_dataset(config.data, seed=0, process_index=0,
                                        process_count=1)))
  arrays = {"inputs": images, "label": labels}
  batches = [jax.device_put({k: (arrays[k][i:i + BATCH] if k in arrays else v)
                             for k, v in layout.items()})
             for i in range(0, args.examples, BATCH)]
  state = run.init_fn(config.train.seed)
  state, _, _ = step(state, batches[0])  # compiles
  flops = hlo.step_flops(step.lower(state, batches[0]).compile()) / BATCH
  torch_epoch(model, train_input[:1000], train_target[:1000])  # warm-up

  peak = hlo.matmul_peak()
  print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), jax "
        f"{jax.__version__}; matmul peak {peak / 1e9:.0f} GFLOP/s; step "
        f"{flops / 1e6:.2f} MFLOP per example: floor {peak / flops:,.0f} examples/s",
        flush=True)
  results = {"torch": [], "step": [], "loop": []}
  for r in range(args.repeats):
    order = ("torch", "step", "loop") if r % 2 == 0 else ("loop", "step", "torch")
    for side in order:
      if side == "torch":
        results[side].append(torch_epoch(model, train_input, train_target))
      elif side == "step":
        rate, state = ours_step(run, step, state, batches)
        results[side].append(rate)
      else:
        results[side].append(ours_loop(config, os.path.join(tmp, f"run{r}")))
    print(f"repeat {r}: torch {results['torch'][-1]:,.0f}, step "
          f"{results['step'][-1]:,.0f}, loop {results['loop'][-1]:,.0f} examples/s;"
          f" load {os.getloadavg()[0]:.1f}", flush=True)
  med = {k: statistics.median(v) for k, v in results.items()}
  print("\n| side | examples/s (median) | per repeat | / PyTorch | of the floor |")
  print("|---|---|---|---|---|")
  for name, key in (("PyTorch, lecture loop", "torch"), ("deeplearn, train step", "step"),
                    ("deeplearn, train loop", "loop")):
    print(f"| {name} | {med[key]:,.0f} | {', '.join(f'{x:,.0f}' for x in results[key])} |"
          f" {med[key] / med['torch']:.2f}x | {100 * med[key] * flops / peak:.0f}% |")


if __name__ == "__main__":
  main()
