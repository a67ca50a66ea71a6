"""A GAN on sklearn's 8x8 handwritten digits: real data, offline, a CPU minute.

Goodfellow et al. 2014's MLP generator and discriminator (90,688 / 82,689
parameters; deeplearn/models/gan.py), the non-saturating loss, Adam 2e-4 with
beta1 0.5 for both (Radford et al. 2016), batch 64, pixels 0..16 scaled to
[-1, 1]. `:dcgan` swaps in a small DCGAN pair. With
--config.gan.classifier_workdir=<a finished digits_convnet run> each
evaluation adds the classifier's Fréchet distance, mean max-probability and
label entropy (benchmarks/gan_digits.py).

  python -m deeplearn.train --config experiments/digits_gan.py --workdir runs/digits_gan
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "6 steps at batch 32", "dcgan": "a small DCGAN pair instead of MLPs",
            "hinge": "the hinge loss instead of the non-saturating one"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.scheme = "gan"
  config.model = ml_collections.ConfigDict({
      "name": "gan",  # for config.json; the scheme reads the two below
      "generator": {"name": "gan_mlp_generator", "latent_dim": 32,
                    "hidden_sizes": (256, 256), "image_shape": (8, 8, 1)},
      "discriminator": {"name": "gan_mlp_discriminator", "hidden_sizes": (256, 256)}})
  if "dcgan" in chosen:
    config.model = ml_collections.ConfigDict({
        "name": "gan",  # for config.json; the scheme reads the two below
        "generator": {"name": "dcgan_generator", "latent_dim": 32, "base": 2,
                      "features": (128, 64), "channels": 1},
        "discriminator": {"name": "dcgan_discriminator", "features": (64, 128)}})
  config.gan = ml_collections.ConfigDict({
      "d_steps": 1, "loss": "hinge" if "hinge" in chosen else "non_saturating",
      "g_learning_rate": 0.0, "d_learning_rate": 0.0, "eval_samples": 1000,
      "classifier_workdir": ""})

  config.data.dataset = "digits"
  config.data.batch_size = 64
  config.data.eval_batch_size = 360
  config.data.pp_train = "standardize(8, 8)"  # 0..16 -> [-1, 1], tanh's range
  config.data.pp_eval = "standardize(8, 8)"

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 2e-4
  config.optimizer.b1 = 0.5

  config.train.num_steps = 5000
  config.train.log_every = 100
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000

  if "tiny" in chosen:
    config.data.batch_size = 32
    config.gan.eval_samples = 64
    config.train.update(num_steps=6, log_every=2, eval_every=3, checkpoint_every=3)
  return config
