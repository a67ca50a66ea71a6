"""A maxout MLP on sklearn's 8x8 handwritten digits: real data, offline.

Goodfellow et al.'s permutation-invariant maxout network (deeplearn.models.maxout)
sized for 64 inputs: two layers of 240 maxout units with 5 pieces each, dropout
0.5 on the hidden layers and 0.2 on the inputs, as in the paper; inputs
standardized by the training mean and std; Adam 1e-3, batch 64, 1,000 steps;
369,610 parameters. Target: >= 96% test accuracy on the 360 test digits.
`:tiny` is a seconds-long smoke setting.

  python -m deeplearn.train --config experiments/digits_mlp_maxout.py --workdir runs/maxout

Measured 2026-11-22 on the shared 2-core machine, 1 device (benchmarks/ablations.py):
99.2, 99.4, 99.2% test accuracy for seeds 0, 1, 2 (99.3 ± 0.1), 11.6 ± 0.3 s wall per
run. Without the dropout: 99.0 ± 0.3 (the digits are too easy to overfit harmfully).
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "20 steps at batch 64"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "mlp_maxout", "num_classes": 10, "hidden_sizes": (240, 240),
      "pieces": 5, "dropout_rate": 0.5, "input_dropout_rate": 0.2})

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
    config.model.hidden_sizes = (16, 16)
    config.data.eval_batch_size = 120
    config.train.num_steps = 20
    config.train.update(log_every=10, eval_every=20, checkpoint_every=20)
  return config
