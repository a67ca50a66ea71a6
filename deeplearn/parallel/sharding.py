"""Logical axis rules -> NamedShardings for the train state and the batch.

Models name their parameter axes (`embed`, `mlp`, `vocab`, ...); an
experiment maps names to mesh axes in `config.sharding.rules`, MaxText/t5x
style, e.g. `(("batch", ("data", "fsdp")), ("mlp", "model"))`. A name with no
rule is replicated. Changing parallelism is changing that table, not a model.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deeplearn.config import did_you_mean

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def rules_from_config(sharding_cfg) -> tuple[tuple[str, object], ...]:
  rules = []
  for i, rule in enumerate(sharding_cfg.rules):
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(
          f"config.sharding.rules[{i}]={rule!r}: each rule is a pair"
          " (logical_name, mesh_axis | (mesh_axes...) | None).")
    target = rule[1]
    rules.append((rule[0], tuple(target) if isinstance(target, list) else target))
  return tuple(rules)


def check_rules(rules: Rules, mesh: Mesh) -> None:
  for name, target in rules:
    targets = (target,) if isinstance(target, str) else (target or ())
    for axis in targets:
      if axis not in mesh.axis_names:
        raise ValueError(
            f"config.sharding.rules maps {name!r} to mesh axis {axis!r}, which"
            f" is not in the mesh; {did_you_mean(axis, mesh.axis_names)}"
            f"mesh axes: {tuple(mesh.axis_names)}.")


def batch_axes(rules: Rules, mesh: Mesh) -> tuple[str, ...]:
  """Mesh axes the batch dimension is split over (from the `batch` rule)."""
  for name, target in rules:
    if name == "batch":
      targets = (target,) if isinstance(target, str) else tuple(target or ())
      return tuple(axis for axis in targets if axis in mesh.axis_names)
  return ()


def batch_sharding(rules: Rules, mesh: Mesh) -> NamedSharding:
  axes = batch_axes(rules, mesh)
  return NamedSharding(mesh, P(axes if axes else None))


def num_batch_shards(rules: Rules, mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[axis] for axis in batch_axes(rules, mesh)]))


def state_shardings(abstract_state, rules: Rules, mesh: Mesh):
  """Shardings for a state pytree whose params carry nn.Partitioned boxes."""
  specs = nn.get_partition_spec(abstract_state)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def global_batch(local_batch, sharding: NamedSharding):
  """Per-process numpy batch -> global jax.Arrays sharded on the mesh."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)
