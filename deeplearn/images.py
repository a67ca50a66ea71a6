"""Pictures of a run: a batch of images tiled into one grid.

What a scheme's `images(state)` returns (sample grids, reconstructions,
interpolations, latent maps) is built here; the loop writes each as
WORKDIR/images/<name>/<step>.png and as a TensorBoard image.
"""

import numpy as np


def grid(images: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
  """images [N, H, W] or [N, H, W, C] (floats in [0, 1], clipped, or uint8)
  tiled row by row, `cols` to a row, `pad` pixels of black between them
  -> uint8 [H', W'] or [H', W', C]. The last row is filled with black."""
  images = np.asarray(images)
  if images.ndim not in (3, 4):
    raise ValueError(f"grid takes [N, H, W] or [N, H, W, C] images, not {images.shape}")
  if cols < 1:
    raise ValueError(f"grid: cols={cols} must be >= 1")
  if images.dtype != np.uint8:
    images = np.round(np.clip(images.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)
  n, h, w = images.shape[:3]
  rows = -(-n // cols)
  out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, *images.shape[3:]),
                 np.uint8)
  for i, image in enumerate(images):
    r, c = divmod(i, cols)
    top, left = pad + r * (h + pad), pad + c * (w + pad)
    out[top:top + h, left:left + w] = image
  return out
