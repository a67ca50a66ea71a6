"""Local SGD and DiLoCo: replicas train alone for H steps, then meet once.

Lecture concept: cutting the communication of data parallelism. Synchronous
SGD all-reduces the gradients every step; in local SGD each replica takes H
steps on its own data with no communication, then one all-reduce averages
the replicas' weights, so the bytes per step drop by H (Stich 2019, "Local
SGD converges fast and communicates little"; Lin et al. 2020, "Don't use
large mini-batches, use local SGD"). DiLoCo (Douillard et al. 2023) treats
the averaged change of the weights as a gradient for an outer optimizer,
SGD with Nesterov momentum 0.9 and learning rate 0.7.

`config.train.step_form = "local_sgd"`: one replica per device on the
mesh's batch axes. This module is the optimizer side (`local_sgd`, wrapped
around config.optimizer's chain by `deeplearn.optim.from_config`), the
state's shardings and the checks; the step, a shard_map of towers, is
`deeplearn.parallel.data_parallel.make_local_sgd_train_step`. The train state's `params` are the global weights (what
evaluation and checkpoints see); the optimizer state (`LocalState`) holds
every replica's own weights and inner optimizer state, stacked on a leading
axis split over the batch axes, and the outer optimizer's state. The step is
a shard_map over the batch axes; the parameter all-reduce sits in the branch
of a `lax.cond` that runs every H-th step only. Models with batch statistics
are refused (they would need per-replica statistics too).
"""

import re
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from deeplearn.hlo import HloModule, parse_collectives
from deeplearn.parallel import mesh as mesh_lib, sharding

OUTER_OPTIMIZERS = ("average", "nesterov")


class LocalState(NamedTuple):
  params: Any  # [replicas, ...]: each replica's weights, split over the batch axes
  inner: Any  # [replicas, ...]: each replica's inner optimizer state
  outer: Any  # the outer optimizer's state, of the global weights
  count: jax.Array  # updates so far


def local_sgd(inner: optax.GradientTransformation, replicas: int,
              local_steps: int, outer: optax.GradientTransformation | None,
              axis_name) -> optax.GradientTransformation:
  """The local-SGD optimizer; its update runs inside the step's shard_map.

  update(grads, state, params): `grads` are this replica's gradients at its
  own weights (state.params, [1, ...] on each device), `params` the global
  weights. The replica takes its inner step; on every `local_steps`-th
  update one pmean over `axis_name` averages the replicas' weights and the
  global weights become the average (`outer=None`) or take the outer
  optimizer's step on (global - average); the replicas restart from them.
  The returned updates move the global weights: zero between syncs.
  """

  def init(params):
    params = nn.unbox(params)
    own = jax.tree.map(lambda p: jnp.broadcast_to(p, (replicas,) + p.shape),
                       params)
    return LocalState(own, jax.vmap(inner.init)(own),
                      outer.init(params) if outer else optax.EmptyState(),
                      jnp.zeros([], jnp.int32))

  def update(grads, state, params):
    own, inner_state = jax.tree.map(lambda x: x[0], (state.params, state.inner))
    updates, inner_state = inner.update(grads, inner_state, own)
    own = optax.apply_updates(own, updates)
    count = state.count + 1

    def sync(own):  # -> (replica weights, global weights, outer state)
      average = lax.pmean(own, axis_name)  # the one collective
      if outer is None:
        return average, average, state.outer
      delta = jax.tree.map(jnp.subtract, params, average)  # outer gradient
      outer_updates, outer_state = outer.update(delta, state.outer, params)
      new = optax.apply_updates(params, outer_updates)
      return new, new, outer_state

    def local(own):
      return own, params, state.outer

    own, new_params, outer_state = lax.cond(count % local_steps == 0, sync,
                                            local, own)
    updates = jax.tree.map(jnp.subtract, new_params, params)
    own, inner_state = jax.tree.map(lambda x: x[None], (own, inner_state))
    return updates, LocalState(own, inner_state, outer_state, count)

  return optax.GradientTransformation(init, update)


def from_config(tx: optax.GradientTransformation, train_cfg, rules,
                mesh) -> optax.GradientTransformation:
  """config.optimizer's chain as the replicas' inner optimizer."""
  outer = None
  if train_cfg.outer_optimizer == "nesterov":
    outer = optax.sgd(train_cfg.outer_learning_rate, momentum=0.9,
                      nesterov=True)
  return local_sgd(tx, sharding.num_batch_shards(rules, mesh),
                   train_cfg.local_steps, outer,
                   sharding.batch_axes(rules, mesh))


def check(config, num_batch_shards: int) -> None:
  """Local SGD's config checks; raises naming the key and the fix."""
  opt, train = config.optimizer, config.train
  if train.step_form == "local_sgd":
    if opt.staleness or opt.replicas > 1:
      raise ValueError(
          "config.train.step_form='local_sgd' takes synchronous inner steps:"
          " set config.optimizer.staleness=0 and replicas=1.")
    if num_batch_shards < 2:
      raise ValueError(
          "config.train.step_form='local_sgd' runs one replica per batch"
          " shard, but the mesh has 1: split the batch over 2 or more devices"
          f"{mesh_lib.cpu_hint(2)}.")
  if train.local_steps < 1:
    raise ValueError(
        f"config.train.local_steps={train.local_steps} must be >= 1.")
  if train.outer_optimizer not in OUTER_OPTIMIZERS:
    raise ValueError(
        f"config.train.outer_optimizer={train.outer_optimizer!r}: use"
        " 'average' (local SGD) or 'nesterov' (DiLoCo).")


def replica_shardings(state_shardings, rules, mesh):
  """The state's shardings with the replicas' axis split over the batch
  axes (each device holds its own replica, nothing else of them)."""
  split = NamedSharding(mesh, P(sharding.batch_axes(rules, mesh)))
  local = state_shardings.opt_state
  return state_shardings.replace(opt_state=local._replace(
      params=jax.tree.map(lambda _: split, local.params),
      inner=jax.tree.map(lambda _: split, local.inner)))


def _branch_computations(module: HloModule) -> set:
  """Computations that run only when a conditional picks them (and those
  they call)."""
  found, todo = set(), []
  for instructions in module.computations.values():
    for _, opcode, _, attrs in instructions.values():
      if opcode == "conditional":
        todo += _branches(attrs)
  while todo:
    name = todo.pop()
    if name in found or name not in module.computations:
      continue
    found.add(name)
    for _, _, _, attrs in module.computations[name].values():
      todo += _called(attrs)
  return found


def _branches(attrs: str) -> list:
  groups = re.findall(r"branch_computations=\{([^}]*)\}", attrs)
  groups += re.findall(r"(?:true|false)_computation=(%?[\w.\-]+)", attrs)
  return [name for g in groups for name in re.findall(r"%?([\w.\-]+)", g)]


def _called(attrs: str) -> list:
  return re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", attrs)


def bytes_per_step(hlo: str, local_steps: int) -> dict:
  """Non-scalar collective bytes per step (per device) of a compiled step.

  {"every_step": bytes of collectives outside any conditional branch,
   "sync": bytes inside the sync branch (per sync), "per_step": every_step +
   sync / local_steps}. deeplearn.inspect counts a branch as running every
   step; here it runs every `local_steps`-th.
  """
  module = HloModule(hlo)
  branches = _branch_computations(module)
  where = {name: comp for comp, instructions in module.computations.items()
           for name in instructions}
  every = sync = 0
  for c in parse_collectives(module)[0]:
    moved = (c.bytes - c.scalar_bytes) * c.count
    if where.get(c.name) in branches:
      sync += moved
    else:
      every += moved
  return {"every_step": every, "sync": sync,
          "per_step": every + sync / local_steps}
