"""ResNet-50 v1.5 on ImageNet, Goyal et al.'s large-batch recipe, data x fsdp=4.

"Accurate, large minibatch SGD" (2017): batch 8192, SGD momentum 0.9 at
0.1 x 8192 / 256 = 3.2 (`optim.linear_scaling`) after 5 warm-up epochs, weight
decay 1e-4 on kernels only, 90 epochs; here with a cosine decay and label
smoothing 0.1 ("Bag of tricks", 2019). FSDP_RULES split the parameters and
momentum 4 ways (ZeRO-3); needs a multiple of 4 devices. VARIANTS combine with
commas; after `low_res` ("ImageNet in 18 minutes"), the same command without it
resumes at 224 px in the same workdir. ImageNet is a manual download
(config.data.manual_dir); not run here. `deeplearn.inspect` on a v5e:16x16
slice: benchmarks/RESULTS.md.

  python -m deeplearn.train --config experiments/imagenet_resnet50.py --workdir runs/rn50
"""

import ml_collections

from deeplearn.config import FSDP_RULES, default_config
from deeplearn.experiments import variants
from deeplearn.optim import linear_scaling

TRAIN_EXAMPLES, BATCH, EPOCHS, LOW_RES_EPOCHS = 1_281_167, 8192, 90, 30


def pp(size, resize):
  train = f"random_resized_crop({size})|flip_lr|standardize('imagenet')"
  return train, f"resize_small({resize})|central_crop({size})|standardize('imagenet')"


VARIANTS = {"lars": "LARS at lr 10, decay 1e-4, in place of SGD (MLPerf v0.6)",
            "low_res": "progressive resizing's first phase: 30 epochs at 128 px",
            "tiny": "width 8, 32 px, 3 steps, 4 devices; mock data where ImageNet is not"
                    " prepared"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "resnet", "num_classes": 1000, "depth": 50, "width": 64})

  config.data.update(dataset="imagenet2012", eval_split="validation",
                     batch_size=BATCH, eval_batch_size=1024)
  config.data.pp_train, config.data.pp_eval = pp(224, 256)

  config.loss.label_smoothing = 0.1
  # SGD's learning rate: linear_scaling, at the end.
  config.optimizer.update(name="sgd", momentum=0.9, l2=1e-4, decay_mask="kernels")
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

  if "lars" in chosen:
    config.optimizer.update(name="lars", learning_rate=10.0, l2=0.0, weight_decay=1e-4)
  if "low_res" in chosen:
    config.data.pp_train, config.data.pp_eval = pp(128, 146)
    config.train.num_epochs = float(LOW_RES_EPOCHS)
  if "tiny" in chosen:
    config.kernels.conv = "xla"  # compiles in half the time of im2col on a CPU
    config.model.width = 8
    config.data.pp_train, config.data.pp_eval = pp(32, 36)
    # mock_examples: where the dataset is not prepared.
    config.data.update(batch_size=16, eval_batch_size=16, mock_examples=32)
    config.schedule.update(warmup_steps=1, decay_steps=2)
    config.train.num_epochs, config.train.num_steps = 0.0, 3
    config.train.update(log_every=1, eval_every=3, checkpoint_every=3)
  if config.optimizer.name == "sgd":  # 0.1 per 256 images: 3.2 at batch 8192
    config.optimizer.learning_rate = linear_scaling(0.1, config.data.batch_size)
  return config
