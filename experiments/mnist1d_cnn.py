"""MNIST-1D CNN: the default experiment (Greydanus 2020).

MNIST-1D CNN: the default experiment (Greydanus 2020, "Scaling down deep
learning"). The paper's reference recipe: a 5,210-parameter 1-D convnet,
Adam lr 1e-2, batch 100, 6,000 steps; reported test accuracy about 94%.

  python -m deeplearn.train --config experiments/mnist1d_cnn.py --workdir runs/cnn
  ... --config experiments/mnist1d_cnn.py:tiny   (a few seconds, for tests)
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "20 steps at batch 32"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.model = ml_collections.ConfigDict(
      {"name": "mnist1d_cnn", "num_classes": 10})

  config.data.dataset = "mnist1d"
  config.data.batch_size = 100
  config.data.eval_batch_size = 1000

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2

  config.train.num_steps = 6000
  config.train.log_every = 100
  config.train.eval_every = 500
  config.train.checkpoint_every = 1000

  if "tiny" in chosen:
    config.data.batch_size = 32
    config.data.eval_batch_size = 200
    config.train.num_steps = 20
    config.train.log_every = 5
    config.train.eval_every = 10
    config.train.checkpoint_every = 10
  return config
