"""Preprocessing ops named in a registry and chained by a string, big_vision style.

`"standardize|random_crop(4)|flip_lr"` is three ops applied in order; arguments are Python
literals (`ast.literal_eval`, never `eval`). Every op maps a batch, a dict of numpy arrays with
a leading batch axis, to a new batch: vectorised over the batch, the data pipeline costs a few
numpy calls per step instead of Python work per example. Ops act on `inputs` (and `label`):
images are [B, H, W, C], signals [B, L] or [B, L, C]; the spatial axes are those between the
batch and the channel axis. Random ops draw per-example values from the numpy Generator that
grain's `random_map` derives from the seed and the batch's index, so a seed fixes them.
"""

import ast
import dataclasses
from typing import Callable

import numpy as np

from deeplearn.config import did_you_mean

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Op:
  """One preprocessing step; `random` ops need a Generator, the others get None."""
  name: str
  fn: Callable[[Batch, np.random.Generator | None], Batch]
  random: bool = False


OPS: dict[str, Callable[..., Op]] = {}


def _register(random=False):
  def register(factory):
    OPS[factory.__name__] = lambda *args: Op(factory.__name__, factory(*args), random)
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
  """The ops of `spec` as one op, random if any of them is.

  A bare `standardize` asks `stats(prefix)` for its (mean, std), where `prefix` is the spec of
  the ops before it: the pipeline measures them on the training split as those ops leave it.
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
    except TypeError as e:  # wrong number of arguments
      raise ValueError(f"op {name}{args} in {spec!r}: {e}") from e

  def apply(batch, rng):
    for op in ops:
      batch = op.fn(batch, rng)
    return batch

  return Op(spec, apply, random=any(op.random for op in ops))


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std of a batch of inputs: per channel for [B, ..., C], one scalar for [B, L]."""
  x = np.asarray(x, np.float64)
  axes = tuple(range(x.ndim - 1)) if x.ndim >= 3 else None
  return x.mean(axis=axes).astype(np.float32), x.std(axis=axes).astype(np.float32)


def _spatial_axes(x):
  return (1,) if x.ndim <= 3 else tuple(range(1, x.ndim - 1))


def _with_inputs(batch, inputs):
  return {**batch, "inputs": inputs}


@_register()
def standardize(mean, std):
  """(inputs - mean) / std, per channel; a bare `standardize` uses the train split's moments."""
  mean = np.asarray(mean, np.float32)
  scale = 1.0 / np.maximum(np.asarray(std, np.float32), 1e-6)  # constant features stay finite
  return lambda b, rng: _with_inputs(b, (b["inputs"].astype(np.float32) - mean) * scale)


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
def random_crop(pad):
  """Zero-pads the spatial axes by `pad` and crops back at a random offset per example."""
  def crop(b, rng):
    x = b["inputs"]
    axes = _spatial_axes(x)
    padded = np.pad(x, [(pad, pad) if a in axes else (0, 0) for a in range(x.ndim)])
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
    mask = flipped.reshape((-1,) + (1,) * (x.ndim - 1))
    return _with_inputs(b, np.where(mask, np.flip(x, axis=axis), x))
  return flip
