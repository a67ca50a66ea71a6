"""The variational autoencoder (Kingma & Welling, "Auto-Encoding Variational Bayes",
ICLR 2014), MLP or convolutional.

Lecture concept: a latent-variable generative model p(z) p(x | z), p(z) = N(0, I),
trained by maximising the evidence lower bound (ELBO) with an amortised Gaussian
posterior q(z | x) = N(mean(x), diag(exp(log_var(x)))) and the reparameterisation
trick z = mean + exp(log_var / 2) * eps, eps ~ N(0, I), which makes the sampled
bound differentiable in the encoder's parameters. The bound, the likelihoods and
the importance-sampled log p(x) are the task's (deeplearn/tasks/vae.py); the
networks (deeplearn/models/autoencoder.py's Encoder and Decoder) are here.

The decoder gives, per input value, the parameters of `likelihood`:
  bernoulli         1: logits (binary data; binarised dynamically in training)
  gaussian          1: mean, with the fixed standard deviation `sigma`
  gaussian_learned  2: mean and log standard deviation
  logistic          2: mean and log scale of a discretised logistic (grey levels,
                       Salimans et al., PixelCNN++, ICLR 2017)

Parameter counts: `binarized_mnist_vae` (the flax example's: 784-500-20x2-500-784,
Bernoulli) 815,824; `digits_vae` (64-256-8x2-256-64x2, logistic) 55,952, `:latent2`
51,332, `:conv` 15,250, `:bernoulli` (64-256-8x2-256-64) 39,504.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from deeplearn.models.autoencoder import Decoder, Encoder
from deeplearn.models.registry import register

# likelihood -> numbers the decoder gives per input value.
LIKELIHOODS = {"bernoulli": 1, "gaussian": 1, "gaussian_learned": 2, "logistic": 2}


@register("vae")
class VAE(nn.Module):
  """inputs [B, *shape] -> (mean, log_var [B, latent_size], decoder outputs at z = mean
  [B, *shape, P]); `encode`, `decode` for the task's sampled bounds.

  latent_size: z's dimension. hidden_sizes / conv_features / activation: as the
  autoencoder's Encoder and Decoder. likelihood: a key of LIKELIHOODS (checked by
  the task, naming the key). sigma: the fixed Gaussian's standard deviation.
  data_shape: one example's shape; () = the dataset's, filled in by the task.
  """
  latent_size: int = 20
  hidden_sizes: Sequence[int] = (500,)
  conv_features: Sequence[int] = ()
  activation: str = "relu"
  likelihood: str = "bernoulli"
  sigma: float = 0.1
  data_shape: Sequence[int] = ()

  def setup(self):
    self.encoder = Encoder(2 * self.latent_size, self.hidden_sizes, self.conv_features,
                           self.activation)
    self.decoder = Decoder(self.data_shape, LIKELIHOODS.get(self.likelihood, 1),
                           self.hidden_sizes, self.conv_features, self.activation)

  def encode(self, x):
    """-> mean, log_var: [B, latent_size] each."""
    mean, log_var = jnp.split(self.encoder(x), 2, axis=-1)
    return mean, log_var

  def decode(self, z):
    """z [B, latent_size] -> the likelihood's parameters [B, *shape, P]."""
    return self.decoder(z)

  def __call__(self, inputs, *, train: bool = False):
    del train  # no dropout or batch norm; the task samples z
    mean, log_var = self.encode(inputs)
    return mean, log_var, self.decode(mean)
