"""Preprocessing ops named in a registry and chained by a string, big_vision style.

`"standardize|random_crop(4)|flip_lr"` is three ops applied in order; arguments are Python
literals (`ast.literal_eval`, never `eval`). Most ops map a batch, a dict of numpy arrays with
a leading batch axis, to a new batch: vectorised over the batch, the data pipeline costs a few
numpy calls per step instead of Python work per example. Ops act on `inputs` (and `label`):
images are [B, H, W, C], signals [B, L] or [B, L, C]; the spatial axes are those between the
batch and the channel axis. Random ops draw per-example values from the numpy Generator that
grain's `random_map` derives from the seed and the batch's index, so a seed fixes them.

Images of different sizes (ImageNet's) cannot be stacked into a batch until they are cropped
or resized to one size. The ops that do that (`resize`, `resize_small`, `central_crop`,
`random_resized_crop`) are `per_example`: each maps one example, `inputs` [H, W, C] of its
own size, to a new example. A spec with such ops runs in two stages: the ops up to the last
per-example one run on each example alone (a batch op there sees a batch of one), the
examples are stacked, and the remaining ops run vectorised on the batch. Example i of a batch
draws from its own Generator, seeded by the i-th number drawn from the batch's Generator, so
the seed and the batch index still fix every draw, and a batch is still a function of its
index (checkpointable). Specs without per-example ops keep the vectorised path: the pipeline
gathers the batch whole. TFDS's data source decodes JPEG and PNG (with PIL, or OpenCV if it
is installed), so no op decodes.

Resizing uses PIL's bilinear filter, which widens its support when shrinking (antialiased, as
torchvision's resizing of PIL images): cropping 64 random boxes of a 350x400 image to 224x224
took 41 ms with PIL and 286 ms with a numpy bilinear gather vectorised over the batch (no
antialiasing) on a 2-core machine. uint8 RGB and grey images stay uint8 (PIL rounds); other
inputs are resized channel by channel as float32.
"""

import ast
import dataclasses
from typing import Callable

import numpy as np
from PIL import Image

from deeplearn.config import did_you_mean

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Op:
  """One preprocessing step; `random` ops need a Generator, the others get None.

  `per_example` ops map one example (no batch axis) to a new one, the others a batch.
  """
  name: str
  fn: Callable[[Batch, np.random.Generator | None], Batch]
  random: bool = False
  per_example: bool = False


OPS: dict[str, Callable[..., Op]] = {}


def _register(random=False, per_example=False):
  def register(factory):
    OPS[factory.__name__] = lambda *args: Op(factory.__name__, factory(*args), random,
                                             per_example)
    return factory
  return register


def _parts(spec):
  return [p.strip() for p in (spec or "").split("|") if p.strip()]


def parse(spec: str) -> list[tuple[str, tuple]]:
  """`"scale(1/255)|flip_lr"` -> `[("scale", (1/255,)), ("flip_lr", ())]`."""
  ops = []
  for part in _parts(spec):
    name, _, rest = part.partition("(")
    name = name.strip()
    if name not in OPS:
      raise ValueError(f"unknown preprocessing op {name!r} in {spec!r}; "
                       f"{did_you_mean(name, OPS)}known ops: {', '.join(sorted(OPS))}")
    args = ()
    if rest:
      if not rest.endswith(")"):
        raise ValueError(f"op {part!r} in {spec!r} misses its closing ')'")
      args = _literal(rest[:-1], part)
    ops.append((name, args))
  return ops


def _literal(text, part):
  # One literal per comma-separated argument: `1/255` and `(0.5,)` are allowed, names are not.
  try:
    tree = ast.parse(f"({text},)" if text.strip() else "()", mode="eval")
    return tuple(_eval_literal(node) for node in tree.body.elts)
  except (SyntaxError, ValueError) as e:
    raise ValueError(f"op {part!r}: arguments must be Python literals ({e})") from e


def _eval_literal(node):
  # literal_eval plus division, so that `scale(1/255)` reads as written.
  if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
    return _eval_literal(node.left) / _eval_literal(node.right)
  return ast.literal_eval(node)


def build(spec: str, stats: Callable[[str], tuple] | None = None) -> Op:
  """The ops of `spec` as one op, random if any of them is, per-example if any of them is.

  Its `fn` takes a stacked batch or a list of examples (dicts without the batch axis) and
  returns a stacked batch: the two stages of the module docstring, when `spec` has
  per-example ops. A bare `standardize` asks `stats(prefix)` for its (mean, std), where
  `prefix` is the spec of the ops before it: the pipeline measures them on the training split
  as those ops leave it.
  """
  ops = []
  for i, (name, args) in enumerate(parse(spec)):
    if name == "standardize" and not args:
      if any(op.random for op in ops):
        raise ValueError(f"{spec!r}: standardize must come before random ops, whose output "
                         "it would otherwise be measured on")
      if stats is None:
        raise ValueError(f"{spec!r}: a bare standardize needs the training split's statistics")
      args = stats("|".join(_parts(spec)[:i]))
    try:
      ops.append(OPS[name](*args))
    except (TypeError, ValueError) as e:  # wrong number or kind of arguments
      raise ValueError(f"op {name}{args} in {spec!r}: {e}") from e
  split = max((i + 1 for i, op in enumerate(ops) if op.per_example), default=0)
  example_ops, batch_ops = ops[:split], ops[split:]
  seeded = any(op.random for op in example_ops)

  def apply(batch, rng):
    if example_ops or isinstance(batch, list):
      examples = batch if isinstance(batch, list) else unstack(batch)
      if example_ops:
        # Example i's Generator is seeded by the batch Generator's i-th draw.
        seeds = rng.integers(0, 2**63, size=len(examples)) if seeded else [None] * len(examples)
        examples = [_apply_to_example(example_ops, ex, seed) for ex, seed in zip(examples, seeds)]
      batch = stack(examples)
    for op in batch_ops:
      batch = op.fn(batch, rng)
    return batch

  return Op(spec, apply, random=any(op.random for op in ops), per_example=bool(example_ops))


def _apply_to_example(ops, example, seed):
  rng = None if seed is None else np.random.default_rng(seed)
  for op in ops:
    if op.per_example:
      example = op.fn(example, rng)
    else:  # a batch op, on a batch of one
      example = {k: v[0] for k, v in op.fn({k: np.asarray(v)[None] for k, v in example.items()},
                                            rng).items()}
  return example


def stack(examples: list[dict]) -> Batch:
  """Examples (dicts of arrays without the batch axis) as one batch."""
  batch = {}
  for name in examples[0]:
    values = [np.asarray(ex[name]) for ex in examples]
    shapes = {v.shape for v in values}
    if len(shapes) > 1:
      raise ValueError(
          f"examples with {name!r} of different shapes ({', '.join(map(str, sorted(shapes)))}) "
          "cannot be stacked into a batch: end the per-example ops with one that gives every "
          "image one size, e.g. 'random_resized_crop(224)' for training, "
          "'resize_small(256)|central_crop(224)' for evaluation, or 'resize(224)'")
    batch[name] = np.stack(values)
  return batch


def unstack(batch: Batch) -> list[dict]:
  """A batch as a list of examples, the inverse of `stack`."""
  return [{k: v[i] for k, v in batch.items()} for i in range(len(next(iter(batch.values()))))]


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std of a batch of inputs: per channel for [B, ..., C], one scalar for [B, L]."""
  x = np.asarray(x, np.float64)
  axes = tuple(range(x.ndim - 1)) if x.ndim >= 3 else None
  return x.mean(axis=axes).astype(np.float32), x.std(axis=axes).astype(np.float32)


def pooled_moments(chunks) -> tuple[np.ndarray, np.ndarray]:
  """`moments` of the chunks' concatenation, holding one chunk at a time (sums in float64)."""
  count, total, squares = 0, 0.0, 0.0
  for x in chunks:
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1)) if x.ndim >= 3 else None
    count += x.size // (x.shape[-1] if axes else 1)
    total = total + x.sum(axis=axes)
    squares = squares + np.square(x).sum(axis=axes)
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - np.square(mean), 0))
  return mean.astype(np.float32), std.astype(np.float32)


def _spatial_axes(x):
  return (1,) if x.ndim <= 3 else tuple(range(1, x.ndim - 1))


def _with_inputs(batch, inputs):
  return {**batch, "inputs": inputs}


# Per-channel (R, G, B) mean and std of ImageNet's training pixels on the 0..255 scale: the
# 0.485, 0.456, 0.406 / 0.229, 0.224, 0.225 of torchvision's ImageNet recipe, times 255.
NAMED_MOMENTS = {"imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))}


@_register()
def standardize(mean, std=None):
  """(inputs - mean) / std, per channel (the last axis of images).

  A bare `standardize` uses the train split's moments (per channel for images); explicit
  ones are scalars or one value per channel, `standardize((125.3, 123.0, 113.9), (63.0, 62.1,
  66.7))`; `standardize("imagenet")` takes NAMED_MOMENTS' values, for 0..255 RGB pixels
  (measuring them decodes and resizes 50,000 ImageNet JPEGs at the start of every run).
  """
  if isinstance(mean, str):
    if mean not in NAMED_MOMENTS or std is not None:
      raise ValueError(f"standardize({mean!r}) names none of {sorted(NAMED_MOMENTS)}")
    mean, std = NAMED_MOMENTS[mean]
  if std is None:
    raise ValueError("standardize takes a mean and a std, a name such as 'imagenet', or "
                     "nothing (the training split's moments)")
  mean = np.asarray(mean, np.float32)
  scale = 1.0 / np.maximum(np.asarray(std, np.float32), 1e-6)  # constant features stay finite

  def apply(b, rng):
    x = b["inputs"].astype(np.float32, order="C")  # a copy, changed in place
    if mean.ndim == 1 and x.ndim >= 3:
      # Per channel, as rows of width x channels: numpy broadcasts a (3,) vector over a long
      # inner axis ~15x faster than over the channel axis alone (2.9 -> 0.2 ms for CIFAR's
      # [128, 32, 32, 3]), with the same float32 results.
      rows = x.reshape(-1, x.shape[-2] * x.shape[-1])
      rows -= np.tile(mean, x.shape[-2])
      rows *= np.tile(scale, x.shape[-2])
    else:
      x = (x - mean) * scale
    return _with_inputs(b, x)
  return apply


@_register()
def scale(s):
  """inputs * s as float32, e.g. `scale(1/255)` for uint8 images."""
  return lambda b, rng: _with_inputs(b, b["inputs"].astype(np.float32) * np.float32(s))


@_register()
def to_float():
  """inputs as float32 (the pipeline casts at the end anyway; this is for ops in between)."""
  return lambda b, rng: _with_inputs(b, b["inputs"].astype(np.float32))


@_register()
def add_channel():
  """A trailing channel axis for inputs without one: [B, H, W] -> [B, H, W, 1]."""
  return lambda b, rng: _with_inputs(b, b["inputs"][..., None])


@_register()
def onehot(num_classes):
  """Adds `label_onehot` float32 [B, num_classes]; `label` stays, since accuracy needs it."""
  eye = np.eye(num_classes, dtype=np.float32)
  return lambda b, rng: {**b, "label_onehot": eye[b["label"]]}


@_register(random=True)
def random_crop(pad, mode="constant"):
  """Pads the spatial axes by `pad` and crops back at a random offset per example.

  The padding is zeros (`np.pad`'s "constant", as in He et al. 2016's CIFAR recipe and
  torchvision's RandomCrop): black for raw pixels, the mean after `standardize`. Any other
  `np.pad` mode may be named: `random_crop(4, "reflect")`.
  """
  np.pad(np.zeros(2), 1, mode=mode)  # refuses an unknown mode now, not at the first batch
  def crop(b, rng):
    x = b["inputs"]
    axes = _spatial_axes(x)
    padded = np.pad(x, [(pad, pad) if a in axes else (0, 0) for a in range(x.ndim)], mode=mode)
    windows = np.lib.stride_tricks.sliding_window_view(
        padded, [x.shape[a] for a in axes], axis=axes)  # [B, *offsets, C?, *spatial]
    offsets = rng.integers(0, 2 * pad + 1, size=(len(axes), len(x)))
    out = windows[(np.arange(len(x)), *offsets)]  # [B, C?, *spatial]
    if x.ndim == len(axes) + 2:  # move the channel axis back behind the spatial ones
      out = np.moveaxis(out, 1, -1)
    return _with_inputs(b, np.ascontiguousarray(out))
  return crop


@_register(random=True)
def flip_lr():
  """Mirrors the last spatial axis (image width, signal time) of a random half of the batch."""
  def flip(b, rng):
    x = b["inputs"]
    axis = _spatial_axes(x)[-1]
    flipped = rng.random(len(x)) < 0.5
    out = x.copy()  # then half of it overwritten: 4x faster than np.where on CIFAR batches
    out[flipped] = np.flip(x[flipped], axis=axis)
    return _with_inputs(b, out)
  return flip


# Per-example ops: images [H, W, C] of any size.

def _size(size):
  """`224` -> (224, 224); `(h, w)` stays."""
  return (size, size) if isinstance(size, int) else tuple(size)


def _image(example, op):
  x = np.asarray(example["inputs"])
  if x.ndim != 3:
    raise ValueError(f"{op} takes images [H, W, C], got inputs of shape {x.shape}: add_channel "
                     "first for [H, W]")
  return x


def resize_image(x: np.ndarray, size, box=None) -> np.ndarray:
  """x [H, W, C] resized to size (h, w) with PIL's bilinear filter, after cropping to box.

  box = (left, upper, right, lower) in pixels; PIL crops and resizes in one pass.
  """
  h, w = size
  if x.dtype == np.uint8 and x.shape[-1] in (1, 3):  # PIL's "L" and "RGB" images
    out = Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).resize(
        (w, h), Image.Resampling.BILINEAR, box=box)
    return np.asarray(out).reshape(h, w, x.shape[-1])
  return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c], np.float32))
                              .resize((w, h), Image.Resampling.BILINEAR, box=box))
                   for c in range(x.shape[-1])], axis=-1)


@_register(per_example=True)
def resize(size):
  """Each image resized to `size` (an int for square, or (h, w)), bilinear."""
  size = _size(size)
  return lambda ex, rng: {**ex, "inputs": resize_image(_image(ex, "resize"), size)}


@_register(per_example=True)
def resize_small(size):
  """Each image resized so that its shorter side is `size`, keeping the aspect ratio.

  The longer side is floor(size * long / short), as torchvision's Resize(int) computes it.
  """
  def apply(ex, rng):
    x = _image(ex, "resize_small")
    h, w = x.shape[:2]
    new = (size, size * w // h) if h <= w else (size * h // w, size)
    return {**ex, "inputs": resize_image(x, new)}
  return apply


@_register(per_example=True)
def central_crop(size):
  """The centre `size` (an int for square, or (h, w)) of each image, offsets rounded down."""
  ch, cw = _size(size)
  def apply(ex, rng):
    x = _image(ex, "central_crop")
    h, w = x.shape[:2]
    if h < ch or w < cw:
      raise ValueError(f"central_crop({size}) of an image of {h}x{w}: resize_small({max(ch, cw)})"
                       " before it makes every image large enough")
    i, j = (h - ch) // 2, (w - cw) // 2
    return {**ex, "inputs": x[i:i + ch, j:j + cw]}
  return apply


@_register(random=True, per_example=True)
def random_resized_crop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """Inception-style crop (Szegedy et al. 2015, "Going deeper with convolutions"), resized.

  torchvision's RandomResizedCrop: up to 10 tries of a box covering a uniform fraction `scale`
  of the image's area with a log-uniform aspect ratio (width / height) in `ratio`; the first
  box that fits is placed uniformly. If none fits, the centre crop of the largest box whose
  aspect ratio is within `ratio`. The box is resized to `size` (int or (h, w)), bilinear.
  """
  out_size, log_ratio = _size(size), np.log(ratio)
  def apply(ex, rng):
    x = _image(ex, "random_resized_crop")
    h, w = x.shape[:2]
    area = h * w * rng.uniform(scale[0], scale[1], size=10)
    aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1], size=10))
    widths = np.round(np.sqrt(area * aspect)).astype(int)
    heights = np.round(np.sqrt(area / aspect)).astype(int)
    fits = (widths > 0) & (widths <= w) & (heights > 0) & (heights <= h)
    if fits.any():
      k = int(np.argmax(fits))
      ch, cw = int(heights[k]), int(widths[k])
      i, j = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    else:  # torchvision's fallback
      if w / h < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
      elif w / h > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
      else:
        ch, cw = h, w
      i, j = (h - ch) // 2, (w - cw) // 2
    return {**ex, "inputs": resize_image(x, out_size, box=(j, i, j + cw, i + ch))}
  return apply
