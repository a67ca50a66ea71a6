"""A classifier cascade on sklearn's digits: logistic regression -> MLP -> convnet, trained jointly.

Three independent models of increasing cost (1,290, 9,610 and 138,762 XLA FLOPs
per example) train in one run on the sum of their cross-entropies; each
evaluation calibrates the exit thresholds on 300 examples held out of the
training split and reports the cascade's accuracy and average FLOPs on the test
split against the convnet alone (docs/cascades.md). `:tiny` is a seconds-long
smoke setting.

  python -m deeplearn.train --config experiments/digits_cascade.py --workdir runs/digits_cascade
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "40 steps at batch 64"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.scheme = "cascade"
  config.task = "cascade"
  config.model = ml_collections.ConfigDict({
      "name": "cascade", "num_classes": 10, "stages": ("linear", "mlp", "convnet"),
      "mlp_hidden_sizes": (64,), "conv_features": (16, 32), "conv_hidden_sizes": (64,)})

  config.data.dataset = "digits"
  config.data.train_split = "train[:1137]"  # the last 300 calibrate the thresholds
  config.data.batch_size = 64
  config.data.eval_batch_size = 320
  config.data.pp_train = "standardize"
  config.data.pp_eval = "standardize"
  config.cascade = ml_collections.ConfigDict({
      "calibration_split": "train[1137:]", "tolerance": 0.005,
      "thresholds": (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999),
      "reject_class": -1, "group_size": 0, "bucket_size": 32})

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3

  config.train.num_steps = 1500
  config.train.log_every = 100
  config.train.eval_every = 500
  config.train.checkpoint_every = 500

  if "tiny" in chosen:
    config.train.num_steps = 40
    config.train.log_every = 20
    config.train.eval_every = 40
  return config
