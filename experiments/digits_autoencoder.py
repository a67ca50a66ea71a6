"""Autoencoders on the 8x8 digits: an undercomplete bottleneck, sparse and denoising codes.

The default is an MLP 64-128-16-128-64 (20,816 parameters; a linear 16-unit code,
sigmoid outputs) trained on the squared error of digits scaled to [0, 1] (Adam 1e-3,
batch 64, 3,000 steps). `:sparse` makes the code 64 sigmoid units pulled toward an
activation rate of 0.05 by the KL penalty (Ng's sparse autoencoder), `:sparse_l1` 64
relu units with an L1 penalty; `:denoising` trains on inputs with a quarter of the
pixels zeroed (Vincent et al. 2008), `:gaussian_noise` on inputs plus N(0, 0.2^2)
noise, both scored by PSNR on the equally corrupted test set; `:conv` is the
convolutional encoder/decoder; `:mnist1d` the MLP on MNIST-1D's 40-point signals.
Pictures: WORKDIR/images/reconstructions/.

  python -m deeplearn.train --config experiments/digits_autoencoder.py:denoising \
      --workdir runs/digits_dae
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"sparse": "64 sigmoid code units, KL sparsity toward rate 0.05",
            "sparse_l1": "64 relu code units, L1 penalty on the code",
            "denoising": "masking noise: a quarter of the input pixels zeroed",
            "gaussian_noise": "Gaussian input noise, std 0.2",
            "conv": "convolutional encoder and decoder (16, 32 channels)",
            "mnist1d": "MNIST-1D's 40-point signals, linear outputs",
            "tiny": "20 steps at batch 32"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.task = "reconstruction"
  config.model = ml_collections.ConfigDict({
      "name": "autoencoder", "code_size": 16, "hidden_sizes": (128,),
      "code_activation": "identity", "output_activation": "sigmoid"})

  config.data.dataset = "digits"
  config.data.batch_size = 64
  config.data.eval_batch_size = 360
  config.data.pp_train = "scale(1/16)"
  config.data.pp_eval = "scale(1/16)"

  # The reconstruction task's keys (deeplearn/tasks/reconstruction.py), all declared
  # so that the command line can set them (--config.loss.noise=mask).
  config.loss.update(sparsity_l1=0.0, sparsity_kl=0.0, sparsity_target=0.05,
                     noise="none", noise_level=0.25)

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3

  config.train.num_steps = 3000
  config.train.log_every = 100
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000

  if "sparse" in chosen:
    config.model.update(code_size=64, code_activation="sigmoid")
    config.loss.sparsity_kl = 0.1
  if "sparse_l1" in chosen:
    config.model.update(code_size=64, code_activation="relu")
    config.loss.sparsity_l1 = 1e-3
  if "denoising" in chosen:
    config.loss.noise = "mask"
    config.loss.noise_level = 0.25
  if "gaussian_noise" in chosen:
    config.loss.noise = "gaussian"
    config.loss.noise_level = 0.2
  if "conv" in chosen:
    config.model.conv_features = (16, 32)
  if "mnist1d" in chosen:  # real-valued signals: squared error, no pictures
    config.data.update(dataset="mnist1d", pp_train="", pp_eval="", eval_batch_size=500)
    config.model.output_activation = "identity"
  if "tiny" in chosen:
    config.data.batch_size = 32
    config.train.update(num_steps=20, log_every=10, eval_every=20, checkpoint_every=20)
  return config
