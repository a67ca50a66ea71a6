"""PyTorch's pooling semantics, so that torchvision's layouts replicate exactly.

`adaptive_avg_pool` is torch's `adaptive_avg_pool2d` (AlexNet, VGG and GoogLeNet
pool any image size to a fixed grid before their classifiers); `max_pool_ceil`
is `max_pool2d(..., ceil_mode=True)` (GoogLeNet's stem and stage pools).
"""

import numpy as np
import jax.numpy as jnp
import flax.linen as nn


def _adaptive_weights(size: int, out: int) -> np.ndarray:
  """[out, size] averaging matrix: output i averages inputs floor(i * size / out)
  to ceil((i + 1) * size / out) - 1, torch's rule (cells overlap or repeat when
  size is not a multiple of out, e.g. a 1x1 map becomes a constant 6x6 one)."""
  weights = np.zeros((out, size), np.float32)
  for i in range(out):
    start, end = i * size // out, -(-(i + 1) * size // out)
    weights[i, start:end] = 1.0 / (end - start)
  return weights


def adaptive_avg_pool(x, output_size: tuple[int, int]):
  """x: [batch, H, W, C] -> [batch, oh, ow, C], as torch's adaptive_avg_pool2d."""
  b, h, w, c = x.shape
  oh, ow = output_size
  if h % oh == 0 and w % ow == 0:  # equal, non-overlapping cells (224x224 inputs)
    return x.reshape(b, oh, h // oh, ow, w // ow, c).mean(axis=(2, 4))
  wh = jnp.asarray(_adaptive_weights(h, oh), x.dtype)
  ww = jnp.asarray(_adaptive_weights(w, ow), x.dtype)
  return jnp.einsum("ih,bhwc,jw->bijc", wh, x, ww)


def _ceil_extra(size: int, window: int, stride: int) -> int:
  out = -(-(size - window) // stride) + 1
  if (out - 1) * stride >= size:  # torch: the last window starts inside the input
    out -= 1
  if out < 1:
    raise ValueError(f"max-pool window {window} does not fit a feature map of size {size}:"
                     " the input image is too small for this model")
  return (out - 1) * stride + window - size


def max_pool_ceil(x, window: int, stride: int):
  """x: [batch, H, W, C]; max-pool with torch's ceil_mode=True and no padding:
  the output size is ceil((H - window) / stride) + 1, the last window running past
  the bottom / right edge over -inf (nn.max_pool's padding value)."""
  _, h, w, _ = x.shape
  pad = ((0, _ceil_extra(h, window, stride)), (0, _ceil_extra(w, window, stride)))
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding=pad)
