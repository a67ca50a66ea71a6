"""Generators and discriminators of generative adversarial networks.

Lecture concept: a generator G maps noise z ~ N(0, I) to images, a
discriminator D scores images as real or generated, and the two are trained
against each other (Goodfellow et al., "Generative Adversarial Nets", NeurIPS
2014). DCGAN (Radford et al., "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks", ICLR 2016) made it work for
convnets: strided convolutions instead of pooling, transposed convolutions to
upsample, batch norm in both nets (not on D's input layer nor G's output),
ReLU in G with tanh out, leaky ReLU (0.2) in D.

Images are [batch, H, W, C] in [-1, 1] (tanh's range); D returns logits
[batch]. The experiments' sizes and parameter counts (G / D):

  digits 8x8      MLP   z 32 -> 256 -> 256 -> 64           90,688 / 82,689
  digits 8x8      DCGAN z 32, base 2, (128, 64)          149,633 / 132,929
  MNIST 28x28     DCGAN z 100, base 7, (128, 64)         771,969 / 138,689
  CIFAR-10 32x32  DCGAN z 100, base 4, (512, 256, 128)   3,463,939 / 663,361
"""

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from deeplearn.models.layers import Conv, Dense, logical_init
from deeplearn.models.mlp import apply_batch_norm
from deeplearn.models.registry import register


def _leaky(x):
  return nn.leaky_relu(x, 0.2)


@register("gan_mlp_generator")
class MLPGenerator(nn.Module):
  """z [batch, latent_dim] -> images [batch, *image_shape] in [-1, 1]: dense
  ReLU layers of `hidden_sizes`, then a dense layer and tanh."""
  latent_dim: int = 32
  hidden_sizes: Sequence[int] = (256, 256)
  image_shape: Sequence[int] = (8, 8, 1)
  batch_norm: bool = False

  @nn.compact
  def __call__(self, z, *, train: bool):
    x, axes = z, ("embed", "mlp")
    for width in self.hidden_sizes:
      x = Dense(width, use_bias=not self.batch_norm, **logical_init(*axes))(x)
      if self.batch_norm:
        x = apply_batch_norm(x, train, axes[1], None, jnp.float32)
      x, axes = nn.relu(x), axes[::-1]
    x = Dense(math.prod(self.image_shape), **logical_init(axes[0], None))(x)
    return jnp.tanh(x).reshape(z.shape[0], *self.image_shape)


@register("gan_mlp_discriminator")
class MLPDiscriminator(nn.Module):
  """images [batch, ...] -> logits of "real" [batch]: flattened, dense leaky
  ReLU layers of `hidden_sizes`, then one unit."""
  hidden_sizes: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, images, *, train: bool):
    del train  # no batch norm, no dropout
    x, axes = images.reshape(images.shape[0], -1), ("embed", "mlp")
    for width in self.hidden_sizes:
      x = _leaky(Dense(width, **logical_init(*axes))(x))
      axes = axes[::-1]
    return Dense(1, **logical_init(axes[0], None))(x)[:, 0]


@register("dcgan_generator")
class DCGANGenerator(nn.Module):
  """z [batch, latent_dim] -> images [batch, side, side, channels] in [-1, 1].

  A dense layer to a base x base x features[0] map, then one 4x4 stride-2
  transposed convolution per entry of `features[1:]` and a last one to
  `channels`, each doubling the side: side = base * 2 ** len(features).
  Batch norm and ReLU after every layer but the last, which is tanh.
  """
  latent_dim: int = 100
  base: int = 4
  features: Sequence[int] = (512, 256, 128)
  channels: int = 3

  @nn.compact
  def __call__(self, z, *, train: bool):
    b, f0 = self.base, self.features[0]
    x = Dense(b * b * f0, use_bias=False, **logical_init("embed", "mlp"))(z)
    x = apply_batch_norm(x, train, "mlp", None, jnp.float32)
    x = nn.relu(x).reshape(z.shape[0], b, b, f0)
    for i, width in enumerate([*self.features[1:], self.channels]):
      last = i == len(self.features) - 1
      x = nn.ConvTranspose(width, (4, 4), strides=(2, 2), padding="SAME",
                           use_bias=last,
                           **logical_init(None, None, "conv_in", "conv_out"))(x)
      if not last:
        x = nn.relu(apply_batch_norm(x, train, "conv_out", None, jnp.float32))
    return jnp.tanh(x)


@register("dcgan_discriminator")
class DCGANDiscriminator(nn.Module):
  """images [batch, H, W, C] -> logits of "real" [batch]: a 4x4 stride-2
  convolution per entry of `features`, leaky ReLU (0.2) after each and batch
  norm before it on all but the first, then one dense unit."""
  features: Sequence[int] = (64, 128, 256)

  @nn.compact
  def __call__(self, images, *, train: bool):
    x = images
    for i, width in enumerate(self.features):
      x = Conv(width, (4, 4), strides=(2, 2), padding="SAME", use_bias=i == 0,
               **logical_init(None, None, "conv_in", "conv_out"))(x)
      if i > 0:
        x = apply_batch_norm(x, train, "conv_out", None, jnp.float32)
      x = _leaky(x)
    x = x.reshape(x.shape[0], -1)
    return Dense(1, **logical_init("embed", None))(x)[:, 0]
