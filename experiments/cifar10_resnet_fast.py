"""A fast ResNet-9 on CIFAR-10, in the spirit of the DAWNBench speed records.

D. Page's network and recipe ("How to train your ResNet", Myrtle.ai 2018;
github.com/davidcpage/cifar10-fast): the 6.6M-parameter ResNet-9
(deeplearn.models.resnet9, logits x 0.125), batch 512, SGD with Nesterov
momentum 0.9, a one-cycle learning rate that rises linearly to 0.4 over the
first 5 epochs and falls to 0 by epoch 24, weight decay 5e-4 on every
parameter added to the gradient, per-channel standardization, 4-pixel
reflect-padded random crops and horizontal flips. Label smoothing 0.2 is from
the series' later "bag of tricks" post. Differences: the fall is a cosine,
not Page's straight line (config.schedule has no linear decay); no cutout,
ghost batch norm or test-time flips. Target: 94% test accuracy, which the
reference reaches in 24 epochs on one V100 (79 s). Not run here: a 2-core CPU
takes hours per epoch. `:tiny` (width 8, a few steps) is what the tests run
on TFDS mock data.

  python -m deeplearn.train --config experiments/cifar10_resnet_fast.py --workdir runs/cifar
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

TRAIN_EXAMPLES = 50_000

VARIANTS = {"tiny": "width 8, 4 steps at batch 16; mock data where CIFAR-10 is not prepared"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "resnet9", "num_classes": 10, "width": 64, "logit_scale": 0.125})

  config.data.dataset = "cifar10"
  config.data.batch_size = 512
  config.data.eval_batch_size = 1000
  config.data.pp_train = "standardize|random_crop(4, 'reflect')|flip_lr"
  config.data.pp_eval = "standardize"

  config.loss.label_smoothing = 0.2
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.4
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.l2 = 5e-4
  config.schedule.name = "cosine"
  config.schedule.warmup_steps = 5 * TRAIN_EXAMPLES // 512  # 5 epochs

  config.train.num_epochs = 24.0
  config.train.log_every = 49
  config.train.eval_every = 489  # about 5 epochs
  config.train.checkpoint_every = 489

  if "tiny" in chosen:
    config.data.mock_examples = 32  # where the dataset is not prepared
    config.model.width = 8
    config.data.batch_size = 16
    config.data.eval_batch_size = 16
    config.schedule.warmup_steps = 2
    config.train.num_epochs = 0.0
    config.train.num_steps = 4
    config.train.update(log_every=2, eval_every=4, checkpoint_every=4)
  return config
