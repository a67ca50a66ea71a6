"""The MNIST-1D CNN by asynchronous SGD (stale gradients), simulated exactly.

The MNIST-1D CNN (mnist1d_cnn.py) trained by asynchronous SGD, simulated
exactly: 4 replicas (Downpour workers) each compute the gradient of a quarter
of the batch, and each gradient reaches the weights k steps late, k drawn per
step and replica uniformly from {0..4} (stragglers):
W_{t+1} = W_t - a mean_r g_r(W_{t-k_r}) (deeplearn/parallel/async_sgd.py;
Dean et al. 2012, "Large scale distributed deep networks"; the model of Lian
et al. 2015). Plain SGD, the lectures' formula; the same seed gives the same
run bit for bit.

  python -m deeplearn.train --config experiments/mnist1d_stale_sgd.py \\
    --workdir runs/stale [--config.optimizer.staleness=0]  (0: synchronous)

Measured 2026-11-22, 1 CPU device on the shared 2-core machine: final test
accuracy 91.1% (best 91.1% @ 5,500), 97 s; staleness=0: 89.9%, 99 s. At lr
0.1 delays of up to 4 steps cost nothing visible; at 0.3 they do
(benchmarks/async_sgd.py, benchmarks/RESULTS.md).
"""

import os

from deeplearn.config import from_file
from deeplearn.experiments import variants

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "mnist1d_cnn.py")

VARIANTS = {"tiny": "20 steps at batch 32, staleness 2"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = from_file(RECIPE + (f":{arg}" if arg else ""))
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.1
  config.optimizer.replicas = 4  # the batch of 100 -> 4 x 25
  config.optimizer.staleness = 4
  config.optimizer.staleness_dist = "uniform"
  if "tiny" in chosen:
    config.optimizer.staleness = 2
  return config
