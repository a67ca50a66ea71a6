"""MNIST-1D by an MLP.

MNIST-1D MLP: the reference's residual two-hidden-layer MLP
(40-100-100-10, h = h + relu(W h)), 15,210 parameters; paper test accuracy
about 68%.

The paper's recipe (Adam 1e-2, batch 100, 6,000 steps) is the one in
mnist1d_cnn.py; this file only swaps the model.

  python -m deeplearn.train --config experiments/mnist1d_mlp.py --workdir runs/mlp
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
  config.model = ml_collections.ConfigDict({
      "name": "mlp", "num_classes": 10, "hidden_sizes": (100, 100),
      "residual": True})
  return config
