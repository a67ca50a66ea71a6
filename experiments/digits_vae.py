"""A VAE on the 8x8 digits: 17 grey levels, discretised logistic decoder; or binarised.

Kingma & Welling (2014) on sklearn's digits, whose pixels take 17 grey levels
0..16, scaled to k / 16: MLP encoder and decoder 64-256-(8 x 2)-256-(64 x 2), the
decoder giving each pixel a discretised logistic (PixelCNN++'s, mean and log
scale; 55,952 parameters), Adam 1e-3, batch 64, 3,000 steps. Evaluation reports
the test ELBO and the importance-sampled log p(x) with k = 1,000 (nats per
example). `:bernoulli` is the binarised benchmark instead: a Bernoulli decoder
(39,504 parameters), each step binarising a pixel of grey level g with
probability g (dynamic binarisation), the test set binarised once with a fixed
key. `:latent2` has a 2-D latent and pictures the latent map (the decoder over a
grid of z); `:conv` convolutional networks; `:mnist1d` MNIST-1D's 40-point signals.
Pictures: WORKDIR/images/{samples,reconstructions,interpolations,latent_map}/.

  python -m deeplearn.train --config experiments/digits_vae.py --workdir runs/digits_vae
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"bernoulli": "binarised pixels (dynamic binarisation), Bernoulli decoder",
            "latent2": "a 2-D latent, and the latent map picture",
            "conv": "convolutional encoder and decoder (16, 32 channels)",
            "mnist1d": "MNIST-1D's 40-point signals, Gaussian decoder with a learned scale",
            "tiny": "20 steps at batch 32, k = 10"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.task = "vae"
  config.model = ml_collections.ConfigDict({
      "name": "vae", "latent_size": 8, "hidden_sizes": (256,),
      "likelihood": "logistic"})

  config.data.dataset = "digits"
  config.data.batch_size = 64
  config.data.eval_batch_size = 360
  config.data.pp_train = "scale(1/16)"
  config.data.pp_eval = "scale(1/16)"

  # The vae task's keys (deeplearn/tasks/vae.py), all declared for the command line.
  config.loss.update(binarize="none", beta=1.0, iw_samples=1000, iw_chunk=100,
                     num_levels=17)

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3

  config.train.num_steps = 3000
  config.train.log_every = 100
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000

  if "bernoulli" in chosen:
    config.model.likelihood = "bernoulli"
    config.loss.binarize = "dynamic"
  if "latent2" in chosen:
    config.model.latent_size = 2
  if "conv" in chosen:
    config.model.conv_features = (16, 32)
  if "mnist1d" in chosen:  # real-valued signals: no grey levels, no pictures
    config.data.update(dataset="mnist1d", pp_train="", pp_eval="", eval_batch_size=500)
    config.model.likelihood = "gaussian_learned"
  if "tiny" in chosen:
    config.data.batch_size = 32
    config.loss.iw_samples = 10
    config.loss.iw_chunk = 5
    config.train.num_steps = 20
    config.train.log_every = 10
    config.train.eval_every = 20
    config.train.checkpoint_every = 20
  return config
