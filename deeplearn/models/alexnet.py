"""AlexNet: five conv layers and three dense ones, the ImageNet 2012 winner.

Lecture concept: deep convnets at ImageNet scale: relu, overlapping max-pooling,
dropout in the classifier, large strided first-layer kernels.
Reference: Krizhevsky, Sutskever & Hinton, "ImageNet classification with deep
convolutional neural networks", NeurIPS 2012; the layout is torchvision's
`alexnet` (pytorch/vision torchvision/models/alexnet.py), the single-tower
"one weird trick" variant (Krizhevsky 2014, arXiv 1404.5997): 64 rather than 96
first-layer filters, no local response normalisation, and an adaptive average
pool to 6x6 so that any image size reaches the classifier.

On [batch, 224, 224, 3] with 1,000 classes (width=64, hidden_size=4096):

  conv 11x11x64 stride 4 pad 2 (23,296) -> relu -> max-pool 3 stride 2   224 -> 55 -> 27
  conv 5x5x192 pad 2 (307,392) -> relu -> max-pool 3 stride 2            27 -> 27 -> 13
  conv 3x3x384 pad 1 (663,936) -> relu                                    13
  conv 3x3x256 pad 1 (884,992) -> relu                                    13
  conv 3x3x256 pad 1 (590,080) -> relu -> max-pool 3 stride 2            13 -> 6
  adaptive avg-pool 6x6 -> flatten 6*6*256 = 9,216
  dropout -> dense 4096 (37,752,832) -> relu -> dropout -> dense 4096 (16,781,312)
  -> relu -> dense 1000 (4,097,000)
  = 61,100,840 parameters, as torchvision's.

The smallest image it takes is 63x63 (the last max-pool needs a 3x3 map).
"""

import jax.numpy as jnp
import flax.linen as nn

from deeplearn.models.registry import register
from deeplearn.models.layers import Conv, Dense, logical_init
from deeplearn.models.pooling import adaptive_avg_pool

# (channels as a multiple of `width` / 64, kernel, stride, padding, max-pool after)
LAYERS = ((1, 11, 4, 2, True), (3, 5, 1, 2, True), (6, 3, 1, 1, False),
          (4, 3, 1, 1, False), (4, 3, 1, 1, True))


@register("alexnet")
class AlexNet(nn.Module):
  """inputs: [batch, H, W, C] images, H, W >= 63. Returns [batch, num_classes].

  width: channels of the first conv; the others scale with it (64-192-384-256-256).
  hidden_size: width of the two hidden dense layers.
  dropout_rate: dropout before the first two dense layers, only when train=True.
  """
  num_classes: int = 1000
  width: int = 64
  hidden_size: int = 4096
  dropout_rate: float = 0.5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    if min(inputs.shape[1:3]) < 63:  # smaller maps pool to nothing (NaN logits)
      raise ValueError(f"AlexNet needs images of at least 63x63, got {inputs.shape[1:3]}")
    x = inputs
    for i, (multiple, kernel, stride, pad, pool) in enumerate(LAYERS):
      channels = "conv_in" if i else None  # the image's channels are never split
      x = Conv(multiple * self.width, (kernel, kernel), strides=stride,
                  padding=((pad, pad), (pad, pad)), dtype=self.dtype,
                  **logical_init(None, None, channels, "conv_out"))(x)
      x = nn.relu(x)
      if pool:  # overlapping windows (3, stride 2): not a reshape
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
    x = adaptive_avg_pool(x, (6, 6)).reshape(x.shape[0], -1)  # [batch, 6 * 6 * 4 * width]
    axes = ("embed", "mlp")
    for _ in range(2):
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = Dense(self.hidden_size, dtype=self.dtype, **logical_init(*axes))(x)
      x = nn.relu(x)
      axes = axes[::-1]
    logits = Dense(self.num_classes, dtype=self.dtype, **logical_init(axes[0], "vocab"))(x)
    return logits.astype(jnp.float32)  # [batch, num_classes]; float32 for a stable softmax
