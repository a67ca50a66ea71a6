"""A small convnet on sklearn's 8x8 handwritten digits: real data, offline.

1,797 images (1,437 train / 360 test, a fixed seeded split); two 3x3 conv
blocks with 2x2 max-pooling, a 64-unit hidden layer (13,706 parameters),
inputs standardized by the training mean and std. Target: >= 97% test
accuracy. `:tiny` is a seconds-long smoke setting.

  python -m deeplearn.train --config experiments/digits_convnet.py --workdir runs/digits
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "30 steps at batch 64"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "convnet", "num_classes": 10, "features": (16, 32),
      "kernel_size": 3, "pools": (2, 2), "padding": "SAME",
      "hidden_sizes": (64,)})

  config.data.dataset = "digits"
  config.data.batch_size = 64
  config.data.eval_batch_size = 360
  config.data.pp_train = "standardize"
  config.data.pp_eval = "standardize"

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3

  config.train.num_steps = 1000
  config.train.log_every = 50
  config.train.eval_every = 250
  config.train.checkpoint_every = 500

  if "tiny" in chosen:
    config.train.num_steps = 30
    config.train.log_every = 10
    config.train.eval_every = 30
  return config
