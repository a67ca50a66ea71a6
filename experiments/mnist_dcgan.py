"""DCGAN on MNIST (Radford et al. 2016): transposed-conv generator, strided-conv critic.

G: z 100 -> 7x7x128 -> 14x14x64 -> 28x28x1 with batch norm and ReLU, tanh out
(771,969 parameters); D: 4x4 stride-2 convs 64, 128 with leaky ReLU and batch
norm, then one unit (138,689). The non-saturating loss, Adam 2e-4, beta1 0.5,
batch 128, 5 epochs; pixels scaled to [-1, 1]. MNIST comes from the TFDS
catalog (downloaded on first use; `:tiny` runs on mock data offline).

  python -m deeplearn.train --config experiments/mnist_dcgan.py --workdir runs/mnist_dcgan
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "4 steps at batch 16; mock data where MNIST is not prepared"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.scheme = "gan"
  config.model = ml_collections.ConfigDict({
      "name": "gan",  # for config.json; the scheme reads the two below
      "generator": {"name": "dcgan_generator", "latent_dim": 100, "base": 7,
                    "features": (128, 64), "channels": 1},
      "discriminator": {"name": "dcgan_discriminator", "features": (64, 128)}})
  config.gan = ml_collections.ConfigDict({
      "d_steps": 1, "loss": "non_saturating", "g_learning_rate": 0.0,
      "d_learning_rate": 0.0, "eval_samples": 1000, "classifier_workdir": ""})

  config.data.dataset = "mnist"
  config.data.batch_size = 128
  config.data.eval_batch_size = 1000
  config.data.pp_train = "standardize(127.5, 127.5)"  # 0..255 -> [-1, 1]
  config.data.pp_eval = "standardize(127.5, 127.5)"

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 2e-4
  config.optimizer.b1 = 0.5

  config.train.num_epochs = 5.0
  config.train.log_every = 100
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000
  if "tiny" in chosen:
    config.data.update(batch_size=16, eval_batch_size=16, mock_examples=32)
    config.gan.eval_samples = 16
    config.train.update(num_epochs=0.0, num_steps=4, log_every=2, eval_every=4,
                        checkpoint_every=4)
  return config
