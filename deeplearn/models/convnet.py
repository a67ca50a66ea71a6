"""A small 2-D convolutional network: conv -> max-pool -> relu blocks, then an MLP head.

Lecture concept: convolutional layers, pooling and the MNIST convnet of the EE-559
course (F. Fleuret, "Deep learning", EPFL, 2020, lecture 4.6 "Writing a PyTorch module").
The defaults are that network exactly, on [batch, 28, 28, 1]:

  conv 5x5x32 VALID (832) -> max-pool 3 -> relu     28 -> 24 -> 8
  conv 5x5x64 VALID (51,264) -> max-pool 2 -> relu   8 -> 4 -> 2
  flatten 64*2*2 = 256 -> dense 200 (51,400) -> relu -> dense 10 (2,010)
  = 105,506 parameters.

For 8x8 sklearn digits use SAME padding and pools (2, 2) (see `DIGITS` below).
`batch_norm=True` adds batch norm (Ioffe & Szegedy, ICML 2015) after every conv and
hidden dense layer, before pooling and the nonlinearity. `kernel_init`, `bias_init` and
`last_layer_scale` are the MLP family's initialisation options.

Pooling: the windows never overlap (window == stride), so pooling is a reshape and a
max. On XLA:CPU that is about 2x faster than `nn.max_pool` for this net (SGD step,
batch 100, 2 cores: 3,700-3,850 against 1,850-1,950 examples/s, November 2026). Like
`nn.max_pool(..., padding="VALID")` and PyTorch's max_pool2d, rows and columns that do
not fill a whole window are dropped (output size floor(size / window)).
The convolutions are `layers.Conv`: on CPU these unpadded ones run as im2col + matmul,
whose input gradient XLA:CPU computes about 8x faster than its native convolution's
(whole SGD step 7.5-7.8 ms instead of 22-23 ms, see layers.py and benchmarks/RESULTS.md).

Channel split (model parallelism of convolutions, the Megatron pattern applied
to channels): conv i names its output channels `conv_out` when i is even and
`conv_in` when odd, so the kernels alternate [kh, kw, conv_in, conv_out] /
[kh, kw, conv_out, conv_in] (the first conv's input, the image, is unnamed).
The rule `conv_out -> model` makes the even convs column splits (each device
computes its share of the output channels, no communication) and the odd
convs row splits (each device's input channels give a partial sum; one
all-reduce), so no kernel asks one mesh axis to split two of its dimensions.
The flattened features are `embed`, whole, and the dense head alternates
(embed, mlp) / (mlp, embed) as the MLP does. The tables are in
deeplearn/config.py: with MODEL_PARALLEL_RULES and a mesh data x model every
conv and dense kernel of `DIGITS` and of the EE-559 net is split over `model`
(DistBelief's data x model parallelism). Block outputs, the flattened
features and hidden activations carry `nn.with_logical_constraint` names; those
act only when the train step sets the rules and a mesh (step.MeshStep).
"""

from typing import Sequence

import jax.numpy as jnp
import flax.linen as nn

from deeplearn.models.registry import register
from deeplearn.models.layers import Conv, Dense, dense_inits
from deeplearn.models.mlp import apply_batch_norm

# Field values for the variant on 8x8x1 sklearn digits (13,706 parameters):
# 8x8 -> conv3 SAME -> pool 2 -> 4x4 -> conv3 SAME -> pool 2 -> 2x2x32 = 128 -> 64 -> 10.
# Adam 1e-3, batch 64, 1,000 steps: 98.6-99.2% on the digits builder's 360 test images.
DIGITS = dict(features=(16, 32), kernel_size=3, pools=(2, 2), padding="SAME", hidden_sizes=(64,))


def block_max_pool(x, window: int):
  """Max over non-overlapping `window` x `window` blocks of x: [batch, H, W, C].

  Equals nn.max_pool(x, (window, window), strides=(window, window), padding="VALID"),
  remainder rows/columns dropped. Under ties the gradient is split among the tied
  inputs (jnp.max) where nn.max_pool gives it to one; with real-valued inputs ties
  have probability zero.
  """
  b, h, w, c = x.shape
  ho, wo = h // window, w // window
  x = x[:, :ho * window, :wo * window, :]
  return x.reshape(b, ho, window, wo, window, c).max(axis=(2, 4))


@register("convnet")
class ConvNet(nn.Module):
  """inputs: [batch, H, W, C] images ([batch, H, W] gets C=1). Returns [batch, num_classes].

  features: output channels of each conv block; pools: its max-pool window (1 = none);
  kernel_size: square conv kernel side, shared by all blocks; padding: "VALID" | "SAME";
  hidden_sizes: the dense layers between the flattened features and the logits;
  dropout_rate: dropout before every dense layer, only when train=True.
  batch_norm: batch norm after every conv and hidden dense layer (which then drop
    their biases); running statistics in the `batch_stats` collection.
  bn_axis_name: axes the batch statistics are averaged over (cross-replica batch
    norm), set by the explicit steps of deeplearn.parallel.data_parallel; leave it
    None in configs (under jit with a sharded batch the statistics are global).
  kernel_init, bias_init, last_layer_scale: as in the MLP family; bias_init is
    every conv's and hidden dense layer's initial bias (none with batch_norm).
  """
  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  kernel_size: int = 5
  pools: Sequence[int] = (3, 2)
  padding: str = "VALID"
  hidden_sizes: Sequence[int] = (200,)
  dropout_rate: float = 0.0
  batch_norm: bool = False
  bn_axis_name: str | tuple[str, ...] | None = None
  kernel_init: str = "lecun_normal"
  bias_init: float = 0.0
  last_layer_scale: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    if len(self.features) != len(self.pools):
      raise ValueError(f"config.model.pools={self.pools} needs one window per entry of "
                       f"config.model.features={self.features}")
    x = inputs[..., None] if inputs.ndim == 3 else inputs
    k = self.kernel_size
    inits = lambda *axes: dense_inits(axes, self.kernel_init, self.bias_init)  # noqa: E731
    channels = None  # the image's own channels (1 or 3) are never split
    for i, (features, pool) in enumerate(zip(self.features, self.pools)):
      # Channel split: conv i names its output channels "conv_out" (split) when
      # i is even and "conv_in" (whole) when odd, so kernels alternate
      # (.., conv_in, conv_out) / (.., conv_out, conv_in): column, then row.
      out = "conv_out" if i % 2 == 0 else "conv_in"
      x = Conv(features, (k, k), padding=self.padding, use_bias=not self.batch_norm,
                  dtype=self.dtype, **inits(None, None, channels, out))(x)
      if self.batch_norm:
        x = apply_batch_norm(x, train, out, self.bn_axis_name, self.dtype)
      # Pool before relu, as the lecture's net does; the two commute for max-pooling.
      x = nn.relu(block_max_pool(x, pool))
      x = nn.with_logical_constraint(x, ("batch", None, None, out))
      channels = out
    # [batch, H' * W' * C'], whole: after an odd number of convs the split
    # channels are gathered here.
    x = nn.with_logical_constraint(x.reshape(x.shape[0], -1), ("batch", "embed"))
    # Dense kernels alternate (embed, mlp) / (mlp, embed), as in the MLP family.
    axes = ("embed", "mlp")
    for width in self.hidden_sizes:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = Dense(width, use_bias=not self.batch_norm, dtype=self.dtype,
                   **inits(*axes))(x)
      if self.batch_norm:
        x = apply_batch_norm(x, train, axes[1], self.bn_axis_name, self.dtype)
      x = nn.with_logical_constraint(nn.relu(x), ("batch", axes[1]))
      axes = axes[::-1]
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = Dense(self.num_classes, dtype=self.dtype, **dense_inits(
        (axes[0], "vocab"), self.kernel_init, scale=self.last_layer_scale))(x)
    return logits.astype(jnp.float32)  # [batch, num_classes]; float32 for a stable softmax
