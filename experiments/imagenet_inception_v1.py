"""GoogLeNet (Inception v1) on ImageNet with the paper's SGD recipe.

Szegedy et al., "Going deeper with convolutions", CVPR 2015: SGD with momentum
0.9, the learning rate cut by 4% every 8 epochs, the two auxiliary classifiers'
losses added with weight 0.3, dropout 0.4 before the classifier and 0.7 in the
auxiliary heads, and an average of the parameters for evaluation (the paper's
Polyak averaging; an EMA here, since our Polyak mean starts from step 0). The
rate, weight decay and length are those of BVLC's Caffe reproduction
(models/bvlc_googlenet/solver.prototxt: lr 0.01 at batch 32, step 320,000
iterations x 0.96, weight decay 2e-4, 10M iterations = 250 epochs); at batch
256 the lr follows the linear scaling rule. The paper's crops are the
Inception-style random crops (8-100% of the area, aspect 3/4 to 4/3) that
`random_resized_crop` implements. The model is torchvision's batch-norm
GoogLeNet (deeplearn.models.inception, 13.0M parameters with the heads).
ImageNet must be downloaded by hand (config.data.manual_dir). Not run here.
`deeplearn.inspect` (2026-11-22, under TFDS mock data) on 8 CPU devices, 32
images each: 2.76 GiB per device, 2.8e11 FLOPs per device per step (8.7
GFLOP an image), 49.7 MiB of gradient all-reduces (1.00x the minimum).
`:tiny` (32 px, a few steps; GoogLeNet has no width field) is what the tests
run on TFDS mock data.

  python -m deeplearn.train --config experiments/imagenet_inception_v1.py --workdir runs/googlenet
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants
from deeplearn.optim import linear_scaling

TRAIN_EXAMPLES = 1_281_167
BATCH = 256

VARIANTS = {"tiny": "32 px, 3 steps at batch 16; mock data where ImageNet is not prepared"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "googlenet", "num_classes": 1000, "aux_heads": True, "aux_weight": 0.3,
      "dropout_rate": 0.4, "aux_dropout_rate": 0.7})

  config.data.dataset = "imagenet2012"
  config.data.eval_split = "validation"
  config.data.batch_size = BATCH
  config.data.eval_batch_size = 1024
  config.data.pp_train = "random_resized_crop(224)|flip_lr|standardize('imagenet')"
  config.data.pp_eval = "resize_small(256)|central_crop(224)|standardize('imagenet')"

  config.optimizer.name = "sgd"
  # BVLC's 0.01 at batch 32, scaled linearly: 0.08 at 256.
  config.optimizer.learning_rate = linear_scaling(0.01, BATCH, base_batch_size=32)
  config.optimizer.momentum = 0.9
  config.optimizer.l2 = 2e-4
  config.optimizer.averaging = "ema"
  config.optimizer.ema_decay = 0.9999
  config.schedule.name = "step"
  config.schedule.decay_rate = 0.96
  config.schedule.decay_steps = 8 * TRAIN_EXAMPLES // BATCH  # 8 epochs

  config.train.num_epochs = 250.0
  config.train.log_every = 100
  config.train.eval_every = 10_000
  config.train.checkpoint_every = 10_000

  if "tiny" in chosen:
    config.data.mock_examples = 32  # where the dataset is not prepared
    config.kernels.conv = "xla"  # compiles in half the time of im2col on a CPU
    config.data.pp_train = "random_resized_crop(32)|flip_lr|standardize('imagenet')"
    config.data.pp_eval = "resize_small(36)|central_crop(32)|standardize('imagenet')"
    config.data.batch_size = 16
    config.data.eval_batch_size = 16
    config.optimizer.learning_rate = linear_scaling(0.01, 16, base_batch_size=32)
    config.schedule.decay_steps = 2
    config.train.num_epochs = 0.0
    config.train.num_steps = 3
    config.train.update(log_every=1, eval_every=3, checkpoint_every=3)
  return config
