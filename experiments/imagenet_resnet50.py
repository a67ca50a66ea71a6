"""ResNet-50 on ImageNet with the large-batch recipe, data x fsdp parallel.

Goyal et al., "Accurate, large minibatch SGD: training ImageNet in 1 hour"
(2017): batch 8192, SGD with momentum 0.9 at the linear scaling rule's
0.1 x 8192 / 256 = 3.2 (`optim.linear_scaling`), reached by a linear warm-up
over the first 5 epochs, weight decay 1e-4 on the kernels (not on batch norm's
scale and bias), 90 epochs. Where this file differs: the decay after warm-up
is a cosine to 0 (He et al., "Bag of tricks", 2019) rather than /10 at epochs
30, 60, 80, and label smoothing 0.1 (Szegedy et al. 2016; also in the bag of
tricks and MLPerf). ResNet-50 v1.5, 25.6M parameters; torchvision's
augmentation (Inception-style random crops and flips) and 224 px evaluation
crops of 256 px resized images. Mesh data x fsdp=4 with FSDP_RULES: the batch
over all devices, the parameters and momentum split 4 ways (ZeRO-3; for a TPU
pod slice or a GPU host of 4 or 8); needs a multiple of 4 devices.

Variants (comma-separated, e.g. `:lars,tiny`):
  lars     You et al.'s LARS as in the MLPerf v0.6 reference (mlcommons/training,
           resnet_run_loop.py: lr 10 with 5 warm-up epochs for batches of 8k to
           16k, weight decay 1e-4, label smoothing 0.1; its polynomial decay is a
           cosine here); biases and norms get neither decay nor the trust ratio.
  low_res  progressive resizing ("ImageNet in 18 minutes", fast.ai / DIU 2018):
           the first 30 epochs at 128 px, with the full run's learning-rate
           schedule (decay_steps is fixed, so the length may change). The plan
           is to resume its checkpoint with the 224 px config (the parameters do
           not depend on the image size); the resume check refuses that today,
           because data.pp_train / pp_eval are not in config.RESUME_SAFE. With
           them added, `:tiny` trained at 32 px resumed at 48 px and trained on.
  tiny     width 8 on 32 px crops, a few steps: what the tests run on TFDS
           mock data (8 CPU devices).

ImageNet must be downloaded by hand (config.data.manual_dir). Not run here.
`deeplearn.inspect` (2026-11-22, under tfds.testing.mock_data: building a run
asks TFDS for the prepared dataset) on a TPU v5e:16x16 slice (256 chips, data
64 x fsdp 4, 32 images a chip): 3.18 of 16 GiB per chip, 7.6e11 FLOPs per chip
per step (24 GFLOP an image), roofline >= 32.6 ms (HBM-bound; 52.2 ms without
overlap), but 5.71 GiB of all-gathers per chip per step, 60x the parameters'
97 MiB. With DATA_PARALLEL_RULES instead: 2.84 GiB, 97.8 MiB of gradient
all-reduces (1.00x the minimum), >= 41.6 ms (46.0 ms without overlap). At
25.6M parameters FSDP saves little; it is kept as the pod-slice pattern.

  python -m deeplearn.train --config experiments/imagenet_resnet50.py --workdir runs/rn50
"""

import ml_collections

from deeplearn.config import FSDP_RULES, default_config
from deeplearn.optim import linear_scaling

TRAIN_EXAMPLES = 1_281_167
BATCH = 8192
EPOCHS = 90
LOW_RES_EPOCHS = 30


def pp(size, resize):
  train = f"random_resized_crop({size})|flip_lr|standardize('imagenet')"
  return train, f"resize_small({resize})|central_crop({size})|standardize('imagenet')"


def get_config(arg=None):
  variants = set(arg.split(",")) if arg else set()
  if variants - {"lars", "low_res", "tiny"}:
    raise ValueError(f"Unknown variant {arg!r}: use any of lars, low_res, tiny,"
                     " comma-separated.")
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "resnet", "num_classes": 1000, "depth": 50, "width": 64})

  config.data.dataset = "imagenet2012"
  config.data.eval_split = "validation"
  config.data.batch_size = BATCH
  config.data.eval_batch_size = 1024
  config.data.pp_train, config.data.pp_eval = pp(224, 256)

  config.loss.label_smoothing = 0.1
  config.optimizer.name = "sgd"  # its learning rate: linear_scaling, at the end
  config.optimizer.momentum = 0.9
  config.optimizer.l2 = 1e-4
  config.optimizer.decay_mask = "kernels"
  steps_per_epoch = TRAIN_EXAMPLES / BATCH
  config.schedule.name = "cosine"
  config.schedule.warmup_steps = int(5 * steps_per_epoch)
  # The whole run's decay, also when a phase of it (low_res) stops early.
  config.schedule.decay_steps = int(EPOCHS * steps_per_epoch) - config.schedule.warmup_steps

  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 4})
  config.sharding.rules = FSDP_RULES

  config.train.num_epochs = float(EPOCHS)
  config.train.log_every = 50
  config.train.eval_every = 782  # about 5 epochs
  config.train.checkpoint_every = 782

  if "lars" in variants:
    config.optimizer.name = "lars"
    config.optimizer.learning_rate = 10.0
    config.optimizer.l2 = 0.0
    config.optimizer.weight_decay = 1e-4
  if "low_res" in variants:
    config.data.pp_train, config.data.pp_eval = pp(128, 146)
    config.train.num_epochs = float(LOW_RES_EPOCHS)
  if "tiny" in variants:
    config.model.width = 8
    config.data.pp_train, config.data.pp_eval = pp(32, 36)
    config.data.batch_size = 16
    config.data.eval_batch_size = 16
    config.schedule.warmup_steps = 1
    config.schedule.decay_steps = 2
    config.train.num_epochs = 0.0
    config.train.num_steps = 3
    config.train.update(log_every=1, eval_every=3, checkpoint_every=3)
  if config.optimizer.name == "sgd":  # 0.1 per 256 images: 3.2 at batch 8192
    config.optimizer.learning_rate = linear_scaling(0.1, config.data.batch_size)
  return config
