"""Maxout units: the max over k learned linear pieces, as a layer, an MLP and a convnet.

Lecture concept: a learned piecewise-linear activation. A maxout unit computes
h_i(x) = max_j (x W_ij + b_ij), j = 1..k: a convex function of its input with up
to k linear pieces (relu is max(xw + b, 0), a 2-piece maxout with one piece fixed
at zero). Designed to pair with dropout: it never saturates, and model averaging
by weight scaling stays accurate.
Reference: Goodfellow, Warde-Farley, Mirza, Courville & Bengio, "Maxout networks",
ICML 2013 (pylearn2's `Maxout` and `MaxoutConvC01B` layers). In a convnet a
maxout unit takes the max over a group of k channels at each position
("cross-channel pooling").

A maxout layer of n units is a linear layer of n * k outputs followed by the max
over each group of k consecutive outputs, so it has k times the parameters of
the linear layer. `mlp_maxout` defaults to the paper's permutation-invariant
MNIST network, on [batch, 784]:

  dense 784 -> 240 x 5 pieces (942,000) -> max -> dense 240 -> 240 x 5 (289,200)
  -> max -> dense 10 (2,410) = 1,233,610 parameters.

`convnet_maxout` is the EE-559 lecture convnet (deeplearn.models.convnet) with
every conv + relu and dense + relu replaced by a maxout layer; on [batch, 28, 28, 1]
with k = 2 it has 2 x 832 + 2 x 51,264 + 2 x 51,400 + 2,010 = 209,002 parameters.
"""

from typing import Sequence

import jax.numpy as jnp
import flax.linen as nn

from deeplearn.models.registry import register
from deeplearn.models.convnet import block_max_pool
from deeplearn.models.layers import Conv, Dense, dense_inits, logical_init


class Maxout(nn.Module):
  """`features` maxout units with `pieces` linear pieces each, on the last axis.

  kernel_size None: dense pieces, [..., in] -> [..., features];
  else conv pieces, [batch, H, W, in] -> [batch, H', W', features].
  Output unit i is the max of linear outputs i * pieces ... (i + 1) * pieces - 1.
  kernel_axes: the logical names of the linear map's kernel.
  kernel_init: its initialiser by name (deeplearn.models.layers.kernel_initializer).
  """
  features: int
  pieces: int = 2
  kernel_size: Sequence[int] | None = None
  padding: str = "SAME"
  kernel_axes: tuple = ("embed", "mlp")
  kernel_init: str = "lecun_normal"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = self.features * self.pieces
    inits = dense_inits(self.kernel_axes, self.kernel_init)
    if self.kernel_size is None:
      y = Dense(width, dtype=self.dtype, **inits)(x)
    else:
      y = Conv(width, tuple(self.kernel_size), padding=self.padding, dtype=self.dtype,
                  **inits)(x)
    return y.reshape(*y.shape[:-1], self.features, self.pieces).max(axis=-1)


@register("mlp_maxout")
class MaxoutMLP(nn.Module):
  """inputs: [batch, ...] flattened to [batch, features]. Returns [batch, num_classes].

  hidden_sizes: maxout units per hidden layer; pieces: linear pieces per unit.
  dropout_rate: dropout on each hidden layer's output; input_dropout_rate: on the
    inputs (the paper: 0.5 and 0.2); only when train=True.
  kernel_init, last_layer_scale: as in the MLP family (initialisers by name; the
    classifier's initial kernel multiplied by last_layer_scale).
  """
  num_classes: int = 10
  hidden_sizes: Sequence[int] = (240, 240)
  pieces: int = 5
  dropout_rate: float = 0.0
  input_dropout_rate: float = 0.0
  kernel_init: str = "lecun_normal"
  last_layer_scale: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    h = inputs.reshape(inputs.shape[0], -1)
    h = nn.Dropout(self.input_dropout_rate, deterministic=not train)(h)
    axes = ("embed", "mlp")  # alternating, as in the MLP family
    for width in self.hidden_sizes:
      h = Maxout(width, self.pieces, kernel_axes=axes, kernel_init=self.kernel_init,
                 dtype=self.dtype)(h)
      h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
      axes = axes[::-1]
    logits = Dense(self.num_classes, dtype=self.dtype, **dense_inits(
        (axes[0], "vocab"), self.kernel_init, scale=self.last_layer_scale))(h)
    return logits.astype(jnp.float32)  # [batch, num_classes]; float32 for a stable softmax


@register("convnet_maxout")
class MaxoutConvNet(nn.Module):
  """The ConvNet family with maxout units. inputs: [batch, H, W, C] images
  ([batch, H, W] gets C=1). Returns [batch, num_classes].

  features, kernel_size, pools, padding, hidden_sizes: as in ConvNet (maxout
  units per layer); pieces: linear pieces per unit (channels per group).
  dropout_rate: dropout before every dense layer, only when train=True.
  """
  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  kernel_size: int = 5
  pools: Sequence[int] = (3, 2)
  padding: str = "VALID"
  hidden_sizes: Sequence[int] = (200,)
  pieces: int = 2
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    if len(self.features) != len(self.pools):
      raise ValueError(f"config.model.pools={self.pools} needs one window per entry of "
                       f"config.model.features={self.features}")
    x = inputs[..., None] if inputs.ndim == 3 else inputs
    k = self.kernel_size
    channels = None  # the image's channels are never split
    for features, pool in zip(self.features, self.pools):
      x = Maxout(features, self.pieces, (k, k), self.padding,
                 kernel_axes=(None, None, channels, "conv_out"), dtype=self.dtype)(x)
      channels = "conv_in"
      x = block_max_pool(x, pool)  # max over space after the max over pieces
    x = x.reshape(x.shape[0], -1)  # [batch, H' * W' * C']
    axes = ("embed", "mlp")
    for width in self.hidden_sizes:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = Maxout(width, self.pieces, kernel_axes=axes, dtype=self.dtype)(x)
      axes = axes[::-1]
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = Dense(self.num_classes, dtype=self.dtype, **logical_init(axes[0], "vocab"))(x)
    return logits.astype(jnp.float32)  # [batch, num_classes]; float32 for a stable softmax
