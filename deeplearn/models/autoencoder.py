"""Autoencoders: an encoder to a code, a decoder back to the input, MLP or convolutional.

Lecture concept: unsupervised learning, "predict properties inherently present in
the data alone": with a code narrower than the input (an undercomplete bottleneck)
the network must keep what matters to rebuild the input. A sparse code
(`code_activation="sigmoid"` and a KL penalty toward a target rate, or an L1
penalty; Ng's CS294A notes, 2011) or a corrupted input (the denoising autoencoder,
Vincent et al., ICML 2008) regularise it instead. The penalties and the noise are
the task's (deeplearn/tasks/reconstruction.py, `config.loss`); the network is here.

`Encoder` and `Decoder` are shared with the VAE (deeplearn/models/vae.py):

  MLP   [B, *shape] -> flatten -> Dense(hidden_sizes...) -> Dense(out)
        z -> Dense(reversed hidden_sizes...) -> Dense(prod(shape) * P) -> [B, *shape, P]
  conv  [B, H, W, C] -> Conv 3x3 stride 2 SAME (conv_features...) -> flatten -> Dense(out)
        z -> Dense(h * w * last) -> ConvTranspose 3x3 stride 2 SAME (reversed features)
          -> Conv 3x3 SAME (C * P), cropped to [B, H, W, C, P]

P is the number of numbers the decoder gives per input value (1 here; a VAE's
likelihood may take 2: a mean and a scale).

Parameter counts on 8x8x1 digits (`digits_autoencoder`): the MLP 64-128-16-128-64,
identity code, 20,816; `:sparse`, code 64 (sigmoid): 33,152; `:conv`
(features 16, 32, code 16): 16,129.
"""

import math
from typing import Sequence

import flax.linen as nn

from deeplearn.models.layers import Conv, Dense, activation, logical_init
from deeplearn.models.registry import register

KERNEL = (3, 3)


def _axes(i: int) -> tuple[str, str]:
  # Consecutive dense kernels alternate (embed, mlp) / (mlp, embed), as in the MLP family.
  return ("embed", "mlp") if i % 2 == 0 else ("mlp", "embed")


class Encoder(nn.Module):
  """[B, *shape] -> [B, features]: MLP, or stride-2 convolutions when `conv_features`."""
  features: int
  hidden_sizes: Sequence[int] = (128,)
  conv_features: Sequence[int] = ()
  activation: str = "relu"

  @nn.compact
  def __call__(self, x):
    act = activation(self.activation)
    if self.conv_features:
      x = x[..., None] if x.ndim == 3 else x
      channels = None
      for i, width in enumerate(self.conv_features):
        out = "conv_out" if i % 2 == 0 else "conv_in"
        x = act(Conv(width, KERNEL, strides=(2, 2), padding="SAME",
                     **logical_init(None, None, channels, out))(x))
        channels = out
    h = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden_sizes if not self.conv_features else ()):
      h = act(Dense(width, **logical_init(*_axes(i)))(h))
    return Dense(self.features, **logical_init("embed", None))(h)


class Decoder(nn.Module):
  """[B, code] -> [B, *shape, per_value]: the Encoder's mirror image (no output nonlinearity)."""
  shape: Sequence[int]
  per_value: int = 1
  hidden_sizes: Sequence[int] = (128,)
  conv_features: Sequence[int] = ()
  activation: str = "relu"

  @nn.compact
  def __call__(self, z):
    act = activation(self.activation)
    shape, p = tuple(self.shape), self.per_value
    if not self.conv_features:
      h = z
      for i, width in enumerate(reversed(self.hidden_sizes)):
        h = act(Dense(width, **logical_init(*_axes(i)))(h))
      out = Dense(math.prod(shape) * p, **logical_init("embed", None))(h)
      return out.reshape(z.shape[0], *shape, p)
    if len(shape) not in (2, 3):
      raise ValueError(f"config.model.conv_features needs images [H, W] or [H, W, C], "
                       f"not inputs of shape {shape}")
    (height, width), channels = shape[:2], (shape[2] if len(shape) == 3 else 1)
    n = len(self.conv_features)
    h0, w0 = -(-height // 2 ** n), -(-width // 2 ** n)  # what the encoder's SAME strides leave
    features = tuple(reversed(self.conv_features))
    x = act(Dense(h0 * w0 * features[0], **logical_init("embed", None))(z))
    x = x.reshape(z.shape[0], h0, w0, features[0])
    for width_out in features[1:] + (features[-1],):
      x = act(nn.ConvTranspose(width_out, KERNEL, strides=(2, 2), padding="SAME",
                               **logical_init(None, None, None, "conv_out"))(x))
    x = Conv(channels * p, KERNEL, padding="SAME",
             **logical_init(None, None, "conv_out", None))(x)
    x = x[:, :height, :width].reshape(z.shape[0], height, width, channels, p)
    return x.reshape(z.shape[0], *shape, p)


@register("autoencoder")
class Autoencoder(nn.Module):
  """inputs [B, *shape] -> (reconstruction [B, *shape], code [B, code_size]).

  code_size: the bottleneck's width. hidden_sizes: the MLP encoder's widths (the
  decoder's reversed); conv_features: when set, a convolutional encoder and decoder
  (stride 2 per entry) instead, hidden_sizes unused. code_activation: "identity"
  (a linear bottleneck), "sigmoid" (codes in (0, 1), what the KL sparsity penalty
  needs) or "relu" (non-negative, for the L1 penalty), any of layers.ACTIVATIONS.
  output_activation: "sigmoid" for data in [0, 1], "identity" otherwise.
  data_shape: one example's shape; () = the dataset's, filled in by the task.
  """
  code_size: int = 16
  hidden_sizes: Sequence[int] = (128,)
  conv_features: Sequence[int] = ()
  activation: str = "relu"
  code_activation: str = "identity"
  output_activation: str = "sigmoid"
  data_shape: Sequence[int] = ()

  def setup(self):
    self.encoder = Encoder(self.code_size, self.hidden_sizes, self.conv_features,
                           self.activation)
    self.decoder = Decoder(self.data_shape, 1, self.hidden_sizes, self.conv_features,
                           self.activation)

  def encode(self, x):
    return activation(self.code_activation)(self.encoder(x))  # [B, code_size]

  def decode(self, code):
    return activation(self.output_activation)(self.decoder(code)[..., 0])  # [B, *shape]

  def __call__(self, inputs, *, train: bool = False):
    del train  # no dropout or batch norm
    code = self.encode(inputs)
    return self.decode(code), code
