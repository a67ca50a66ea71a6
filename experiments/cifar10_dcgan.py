"""DCGAN on CIFAR-10 (Radford et al. 2016) at 32x32: the paper's nets, one block fewer.

G: z 100 -> 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x3 with batch norm and
ReLU, tanh out (3,463,939 parameters); D: 4x4 stride-2 convs 64, 128, 256
with leaky ReLU and batch norm, then one unit (663,361). The non-saturating
loss, Adam 2e-4, beta1 0.5, batch 128, 30 epochs; pixels scaled to [-1, 1].
CIFAR-10 comes from the TFDS catalog (`:tiny` runs on mock data offline).

  python -m deeplearn.train --config experiments/cifar10_dcgan.py --workdir runs/cifar10_dcgan
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "4 steps at batch 16 of narrow nets; mock data where CIFAR-10 is not"
                    " prepared"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.scheme = "gan"
  config.model = ml_collections.ConfigDict({
      "name": "gan",  # for config.json; the scheme reads the two below
      "generator": {"name": "dcgan_generator", "latent_dim": 100, "base": 4,
                    "features": (512, 256, 128), "channels": 3},
      "discriminator": {"name": "dcgan_discriminator", "features": (64, 128, 256)}})
  config.gan = ml_collections.ConfigDict({
      "d_steps": 1, "loss": "non_saturating", "g_learning_rate": 0.0,
      "d_learning_rate": 0.0, "eval_samples": 1000, "classifier_workdir": ""})

  config.data.dataset = "cifar10"
  config.data.batch_size = 128
  config.data.eval_batch_size = 1000
  config.data.pp_train = "standardize(127.5, 127.5)|flip_lr"  # 0..255 -> [-1, 1]
  config.data.pp_eval = "standardize(127.5, 127.5)"

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 2e-4
  config.optimizer.b1 = 0.5

  config.train.num_epochs = 30.0
  config.train.log_every = 100
  config.train.eval_every = 2000
  config.train.checkpoint_every = 2000
  if "tiny" in chosen:
    config.model.generator.features = (32, 16, 8)
    config.model.discriminator.features = (8, 16, 32)
    config.data.update(batch_size=16, eval_batch_size=16, mock_examples=32)
    config.gan.eval_samples = 16
    config.train.update(num_epochs=0.0, num_steps=4, log_every=2, eval_every=4,
                        checkpoint_every=4)
  return config
