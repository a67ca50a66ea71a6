"""Digits on a canvas: a rare-object detection set made from sklearn's digits, offline.

The lecture's cascade example (Viola & Jones, CVPR 2001): most windows of an image
hold nothing, so a cheap first stage should reject them and leave the few
interesting ones to an expensive classifier. Each canvas is 32x32 noise (a
per-canvas amplitude up to NOISE, in the digits' [0, 1] scale) with 0, 1 or 2
non-overlapping 8x8 digits at random even positions. Windows are 8x8 at stride 2,
13 x 13 = 169 per canvas, row-major; a window's label is its digit's class when it
sits exactly on a digit, BACKGROUND (10) otherwise (an off-centre digit is
background: the detector must localise). Everything follows from the seeds.

Splits, each from its own digits (the digits builder's permutation, seed 0):
  train       windows sampled from 600 canvases of the first 1,137 training digits:
              every digit window, up to two partly overlapping ones per digit
              (hard negatives) and three others per canvas
  validation  all windows of 50 canvases of the other 300 training digits,
              in canvas order (for calibrating a cascade)
  test        all windows of 100 canvases of the 360 test digits, in canvas order
"""

import numpy as np
import tensorflow_datasets as tfds

from deeplearn.data.builders.base import LocalBuilder
from deeplearn.data.builders.digits import NUM_TRAIN, SPLIT_SEED

CANVAS, WINDOW, STRIDE, MAX_DIGITS, NOISE = 32, 8, 2, 2, 0.3
BACKGROUND = 10
PER_SIDE = (CANVAS - WINDOW) // STRIDE + 1
WINDOWS_PER_CANVAS = PER_SIDE * PER_SIDE  # 169
NUM_CALIBRATION_DIGITS = 300
SPLITS = {"train": (600, 1), "validation": (50, 2), "test": (100, 3)}  # canvases, seed


def make_canvases(images, labels, num: int, seed: int):
  """num canvases [num, CANVAS, CANVAS] float32 and their digits, a list per canvas
  of (row, col, label), from digit images [n, WINDOW, WINDOW] in [0, 1]."""
  rng = np.random.default_rng(seed)
  amplitude = rng.uniform(0, NOISE, (num, 1, 1))
  canvases = (rng.uniform(0, 1, (num, CANVAS, CANVAS)) * amplitude).astype(np.float32)
  boxes = []
  for canvas in canvases:
    placed = []
    for _ in range(rng.integers(0, MAX_DIGITS + 1)):
      while True:  # a free spot: two 8x8 digits on a 32x32 canvas always fit
        r, c = rng.integers(0, PER_SIDE, size=2) * STRIDE
        if all(abs(r - r2) >= WINDOW or abs(c - c2) >= WINDOW for r2, c2, _ in placed):
          break
      j = rng.integers(len(images))
      canvas[r:r + WINDOW, c:c + WINDOW] = np.maximum(
          canvas[r:r + WINDOW, c:c + WINDOW], images[j])
      placed.append((int(r), int(c), int(labels[j])))
    boxes.append(placed)
  return canvases, boxes


def windows(canvases):
  """All windows of each canvas, row-major: [num, WINDOWS_PER_CANVAS, WINDOW, WINDOW]."""
  view = np.lib.stride_tricks.sliding_window_view(canvases, (WINDOW, WINDOW), axis=(1, 2))
  view = view[:, ::STRIDE, ::STRIDE]  # [num, PER_SIDE, PER_SIDE, WINDOW, WINDOW]
  return view.reshape(len(canvases), WINDOWS_PER_CANVAS, WINDOW, WINDOW)


def window_labels(boxes):
  """[num, WINDOWS_PER_CANVAS] int: the digit's class on a window that sits exactly on
  a digit, BACKGROUND elsewhere; and [num, WINDOWS_PER_CANVAS] bool: the windows
  that overlap some digit."""
  labels = np.full((len(boxes), WINDOWS_PER_CANVAS), BACKGROUND, np.int64)
  overlap = np.zeros((len(boxes), PER_SIDE, PER_SIDE), bool)
  corner = np.arange(PER_SIDE) * STRIDE
  for i, placed in enumerate(boxes):
    for r, c, label in placed:
      labels[i, (r // STRIDE) * PER_SIDE + c // STRIDE] = label
      rows, cols = np.abs(corner - r) < WINDOW, np.abs(corner - c) < WINDOW
      overlap[i] |= rows[:, None] & cols[None, :]
  return labels, overlap.reshape(len(boxes), -1)


def training_windows(canvases, boxes, seed: int):
  """(windows [n, WINDOW, WINDOW], labels [n]): every digit window, up to two hard
  negatives per digit (overlapping it off-centre) and three others per canvas."""
  rng = np.random.default_rng(seed)
  every, (labels, overlap) = windows(canvases), window_labels(boxes)
  out_x, out_y = [], []
  for i in range(len(canvases)):
    positive = np.flatnonzero(labels[i] != BACKGROUND)
    hard = np.flatnonzero(overlap[i] & (labels[i] == BACKGROUND))
    easy = np.flatnonzero(~overlap[i])
    chosen = np.concatenate([
        positive, rng.choice(hard, min(len(hard), 2 * len(positive)), replace=False),
        rng.choice(easy, 3, replace=False)])
    out_x.append(every[i, chosen])
    out_y.append(labels[i, chosen])
  return np.concatenate(out_x), np.concatenate(out_y)


def split_digits(images, labels):
  """The digits each split draws from: {split: (images, labels)}, from sklearn's
  1,797 (images [n, 8, 8] in 0..16) with the digits builder's permutation."""
  order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
  train, test = order[:NUM_TRAIN], order[NUM_TRAIN:]
  parts = {"train": train[:NUM_TRAIN - NUM_CALIBRATION_DIGITS],
           "validation": train[NUM_TRAIN - NUM_CALIBRATION_DIGITS:], "test": test}
  return {s: (images[idx] / 16.0, labels[idx]) for s, idx in parts.items()}


def split_windows(images, labels, split: str):
  """(windows, labels) of a split as the builder writes them."""
  num, seed = SPLITS[split]
  canvases, boxes = make_canvases(*split_digits(images, labels)[split], num, seed)
  if split == "train":
    return training_windows(canvases, boxes, seed)
  return (windows(canvases).reshape(-1, WINDOW, WINDOW),
          window_labels(boxes)[0].reshape(-1))


class DigitsCanvas(LocalBuilder, skip_registration=True):
  """Windows: `image` float32 [8, 8, 1] in [0, 1], `label` of 11 classes (10: background)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(WINDOW, WINDOW, 1), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=BACKGROUND + 1),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,  # the windows of a canvas stay together, in order
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # generated from scikit-learn's digits
    # Imported here: it takes ~1.5 s, and only building needs it.
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    return {split: self._generate_examples(*split_windows(digits.images, digits.target, split))
            for split in SPLITS}

  def _generate_examples(self, xs, ys):
    for key, (x, y) in enumerate(zip(xs, ys)):
      yield key, {"image": x[..., None].astype(np.float32), "label": int(y)}
