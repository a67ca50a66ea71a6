"""The model registry: experiments name a family in `config.model.name`; the rest of
`config.model` are that module's fields.

Every family registers itself with `@register("<name>")` when its file is imported;
importing `deeplearn.models` imports them all. `get_model` checks the config against
the module's dataclass fields so that a typo fails before anything is traced.
"""

import dataclasses

import flax.linen as nn

from deeplearn.config import did_you_mean

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


def get_model(model_cfg) -> nn.Module:
  """Builds the module named by `model_cfg.name` with the other keys as its fields.

  `model_cfg` is an `ml_collections.ConfigDict` (or any mapping). Lists are turned
  into tuples: linen modules are hashed when passed to `jax.jit` as static arguments.
  """
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
  return cls(**cfg)
