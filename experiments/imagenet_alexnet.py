"""AlexNet on ImageNet with the paper's SGD recipe.

Krizhevsky, Sutskever & Hinton, NeurIPS 2012: SGD with momentum 0.9 at lr 0.01,
divided by 10 (the paper: three times, when the validation error stopped
improving; here every 30 epochs, as torchvision's reference), batch 128,
weight decay 5e-4 added to the gradient on every weight, dropout 0.5 before
the two hidden dense layers, about 90 epochs. The model is torchvision's
single-tower AlexNet (61.1M parameters, deeplearn.models.alexnet); the
augmentation is torchvision's (Inception-style random crops and flips, 224 px
evaluation crops of 256 px images) rather than the paper's 224 px crops of
256 px images and PCA colour noise. ImageNet must be downloaded by hand
(config.data.manual_dir). Not run here. `deeplearn.inspect` (2026-11-22,
under TFDS mock data) on 8 CPU devices, 16 images each: 942 MiB per device,
6.2e10 FLOPs per device per step (3.9 GFLOP an image), one 233 MiB gradient
all-reduce. `:tiny` (width 8, 64 px, a few steps) is what the tests run on
TFDS mock data.

  python -m deeplearn.train --config experiments/imagenet_alexnet.py --workdir runs/alexnet
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

TRAIN_EXAMPLES = 1_281_167
BATCH = 128

VARIANTS = {
    "tiny": "width 8, 64 px, 3 steps at batch 16; mock data where ImageNet is not prepared",
}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "alexnet", "num_classes": 1000, "width": 64, "hidden_size": 4096,
      "dropout_rate": 0.5})

  config.data.dataset = "imagenet2012"
  config.data.eval_split = "validation"
  config.data.batch_size = BATCH
  config.data.eval_batch_size = 1024
  config.data.pp_train = "random_resized_crop(224)|flip_lr|standardize('imagenet')"
  config.data.pp_eval = "resize_small(256)|central_crop(224)|standardize('imagenet')"

  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.l2 = 5e-4
  config.schedule.name = "step"
  config.schedule.decay_rate = 0.1
  config.schedule.decay_steps = 30 * TRAIN_EXAMPLES // BATCH  # 30 epochs

  config.train.num_epochs = 90.0
  config.train.log_every = 100
  config.train.eval_every = 10_000
  config.train.checkpoint_every = 10_000

  if "tiny" in chosen:
    config.data.mock_examples = 32  # where the dataset is not prepared
    config.model.update(width=8, hidden_size=32)
    config.data.pp_train = "random_resized_crop(64)|flip_lr|standardize('imagenet')"  # >= 63
    config.data.pp_eval = "resize_small(72)|central_crop(64)|standardize('imagenet')"
    config.data.batch_size = 16
    config.data.eval_batch_size = 16
    config.schedule.decay_steps = 2
    config.train.num_epochs = 0.0
    config.train.num_steps = 3
    config.train.update(log_every=1, eval_every=3, checkpoint_every=3)
  return config
