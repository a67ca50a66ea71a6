"""MNIST-1D Logistic regression: a single linear layer, 410 parameters;
paper test accuracy about 32%.

The paper's recipe (Greydanus 2020, "Scaling down deep learning"; reference
code greydanus/mnist1d notebooks/train.py): Adam lr 1e-2, batch 100, 6,000
steps, no weight decay.

  python -m deeplearn.train --config experiments/mnist1d_logreg.py --workdir runs/logreg
"""

import ml_collections

from deeplearn.config import default_config


def get_config(arg=None):
  config = default_config()
  config.model = ml_collections.ConfigDict({"name": "linear", "num_classes": 10})

  config.data.dataset = "mnist1d"
  config.data.batch_size = 100
  config.data.eval_batch_size = 1000

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2

  config.train.num_steps = 6000
  config.train.log_every = 100
  config.train.eval_every = 500
  config.train.checkpoint_every = 1000
  if arg:
    raise ValueError(f"Unknown variant {arg!r}: this experiment has none.")
  return config
