"""The model registry: experiments name a family in `config.model.name`; the rest of
`config.model` are that module's fields.

Every family registers itself with `@register("<name>")` when its file is imported;
importing `deeplearn.models` imports them all. `get_model` checks the config against
the module's dataclass fields so that a typo fails before anything is traced.
"""

import collections.abc
import dataclasses
import typing

import flax.linen as nn

from deeplearn.config import did_you_mean
from deeplearn.models import layers

_REGISTRY: dict[str, type[nn.Module]] = {}

# Fields every linen Module has that a config must not set: `name` is taken by the
# registry key and `parent` is linen's own bookkeeping.
_RESERVED = ("name", "parent")


def register(name: str):
  """Class decorator: makes the module buildable as `config.model.name = name`."""

  def decorate(cls):
    if name in _REGISTRY:
      raise ValueError(f"model {name!r} is registered twice: {_REGISTRY[name]} and {cls}")
    _REGISTRY[name] = cls
    return cls

  return decorate


def registered() -> list[str]:
  """Names of all registered families, sorted."""
  return sorted(_REGISTRY)


def fields(cls: type[nn.Module]) -> list[str]:
  """The config keys `cls` accepts (its dataclass fields minus linen's own)."""
  return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in _RESERVED]


def _resolved(model_cfg) -> tuple[type[nn.Module], dict]:
  """(class, fields) of `model_cfg`, its name and field names checked."""
  cfg = dict(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else model_cfg)
  name = cfg.pop("name", None)
  if name not in _REGISTRY:
    raise ValueError(
        f"config.model.name={name!r} is not a registered model; "
        f"{did_you_mean(name, registered())}Registered: {registered()}")
  cls = _REGISTRY[name]
  valid = fields(cls)
  for key, value in cfg.items():
    if key not in valid:
      raise ValueError(
          f"config.model.{key} is not a field of model {name!r} ({cls.__name__}); "
          f"{did_you_mean(key, valid)}Fields: {valid}")
    if isinstance(value, list):
      cfg[key] = tuple(value)
  return cls, cfg


def get_model(model_cfg) -> nn.Module:
  """Builds the module named by `model_cfg.name` with the other keys as its fields.

  `model_cfg` is an `ml_collections.ConfigDict` (or any mapping). Lists are turned
  into tuples: linen modules are hashed when passed to `jax.jit` as static arguments.
  """
  cls, cfg = _resolved(model_cfg)
  return cls(**cfg)


# String fields naming a function, looked up (and so checked) before tracing.
_NAMED = {"activation": layers.activation, "kernel_init": layers.kernel_initializer}


def check_values(model_cfg) -> None:
  """Raises naming the key on a value no model takes, before anything traces.

  Int fields, and the ints of Sequence[int] fields (hidden_sizes, features),
  are widths, sizes and counts: >= 1. The exception is a field whose default
  is 0, where 0 means something its docstring says (transformer.mlp_dim: 4 *
  embed_dim; moe_experts: none; bptt_len: full BPTT; lenet5.padding; pad_id,
  a token): >= 0. Zero layers is not a model with no layers but another
  model (ngram_mlp is the bigram one), so num_layers too is >= 1.
  """
  cls, cfg = _resolved(model_cfg)
  hints = typing.get_type_hints(cls)
  defaults = {f.name: f.default for f in dataclasses.fields(cls)}
  for key, value in cfg.items():
    if key in _NAMED and isinstance(value, str):
      _NAMED[key](value)
    hint = hints.get(key)
    if hint is int:
      values = (value,)
    elif typing.get_origin(hint) in (tuple, collections.abc.Sequence) and (
        typing.get_args(hint) in ((int,), (int, ...))):
      values = value if isinstance(value, (tuple, list)) else (value,)
    else:
      continue
    low = 0 if defaults.get(key) == 0 else 1
    if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v < low
           for v in values):
      each = "" if hint is int else " each"
      raise ValueError(
          f"config.model.{key}={value!r} must be >= {low}{each}: a width, size"
          f" or count of model {model_cfg['name']!r}"
          + (" (0 is its default)." if low == 0 else "."))
