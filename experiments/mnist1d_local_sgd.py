"""The MNIST-1D CNN trained by local SGD (replicas average every k steps).

The MNIST-1D CNN (mnist1d_cnn.py) by local SGD: every device on the
`data` axis is a replica with its own weights; it takes H = 8 SGD steps on
its share of the batch alone, then one all-reduce averages the replicas'
weights, so the bytes per step drop 8 times (deeplearn/parallel/local_sgd.py;
Stich 2019, "Local SGD converges fast and communicates little"; Lin et al.
2020). With `--config.train.outer_optimizer=nesterov` it is DiLoCo (Douillard
et al. 2023): the averaged change is the gradient of an outer SGD with
Nesterov momentum 0.9, lr 0.7. Evaluation and checkpoints see the global
weights; the replicas are checkpointed with the optimizer state.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m deeplearn.train \\
    --config experiments/mnist1d_local_sgd.py --workdir runs/local_sgd \\
    [--config.train.local_steps=1]  (1: synchronous SGD, the same numbers)

Measured 2026-11-22, 8 simulated devices on the shared 2-core machine: final
test accuracy 94.1% after 3,000 steps, 54.5 s; local_steps=1 (synchronous
SGD at batch 256, lr 0.3): 91.6% (best 91.7%), 38.3 s.
"""

import os

import ml_collections

from deeplearn.config import DATA_PARALLEL_RULES, from_file
from deeplearn.experiments import variants

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "mnist1d_cnn.py")

VARIANTS = {"tiny": "20 steps at batch 32, averaging every 2"}


def get_config(arg=None):
  variants(arg, VARIANTS)
  config = from_file(RECIPE + (f":{arg}" if arg else ""))
  config.mesh = ml_collections.ConfigDict({"data": -1})  # 2 or more devices
  config.sharding.rules = DATA_PARALLEL_RULES
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.3
  config.train.step_form = "local_sgd"
  config.train.local_steps = 8
  config.train.outer_optimizer = "average"  # or "nesterov": DiLoCo
  if not arg:
    config.data.batch_size = 256  # 32 per replica on 8 devices
    config.train.num_steps = 3000
  else:
    config.train.local_steps = 2
  return config
