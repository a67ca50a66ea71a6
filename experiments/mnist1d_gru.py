"""MNIST-1D read by a GRU, step by step.

MNIST-1D GRU: the reference's bidirectional GRU (hidden size 6, PyTorch-
style biases) reading one value per step, 5,134 parameters; paper test
accuracy about 91%.

The paper's recipe (Adam 1e-2, batch 100, 6,000 steps) is the one in
mnist1d_cnn.py; this file only swaps the model.

  python -m deeplearn.train --config experiments/mnist1d_gru.py --workdir runs/gru
"""

import os

import ml_collections

from deeplearn.config import from_file
from deeplearn.experiments import variants

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "mnist1d_cnn.py")

VARIANTS = {"tiny": "20 steps at batch 32"}


def get_config(arg=None):
  variants(arg, VARIANTS)
  config = from_file(RECIPE + (f":{arg}" if arg else ""))
  config.model = ml_collections.ConfigDict({"name": "mnist1d_gru", "num_classes": 10})
  return config
