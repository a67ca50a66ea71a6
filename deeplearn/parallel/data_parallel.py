"""Synchronous data parallelism with the collectives written out.

Lecture concept: synchronous SGD as towers. Every device holds a copy of the
weights, computes the loss and gradients of its slice of the batch, the
gradients are averaged across devices (an all-reduce) and every replica
applies the same update, so the copies never drift apart. The train loop's
step (`train.make_train_step`) gets the same result automatically: jit with
the batch sharded over the `data` axis, and XLA inserts the all-reduce. The
two explicit forms here show it:

  make_shard_map_train_step  jax.shard_map over the mesh's batch axes, with
                             lax.pmean / lax.psum: a drop-in for the jit step.
  make_pmap_train_step       the classic jax.pmap form on a pure data mesh,
                             with the state replicated per device
                             (replicate_state / unreplicate_state) and the
                             batch split [devices, per_device, ...].

Batch norm: a tower sees only its slice, so per-device statistics differ from
the single-device ones. With `cross_replica_batch_norm` (the default) the
models' `bn_axis_name` is set to the batch axes and flax averages the
statistics across towers (synchronised batch norm, as in Goyal et al. 2017,
"Accurate, large minibatch SGD"); the run then equals one device on the
whole batch. Without it each tower normalises by its own statistics and the
running averages are averaged after the step.
"""

import copy

import flax.jax_utils
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from deeplearn import optim, train
from deeplearn.parallel import mesh as mesh_lib, sharding

PMAP_AXIS = "batch"


def _tower_task(task, axis_name, cross_replica_batch_norm: bool):
  """The task whose model averages batch statistics over `axis_name`.

  Returns (task, synced): synced says the new model state is the same on
  every tower. Models without a `bn_axis_name` field keep per-device
  statistics.
  """
  if not (cross_replica_batch_norm and hasattr(task.model, "bn_axis_name")):
    return task, False
  task = copy.copy(task)
  task.model = task.model.clone(bn_axis_name=axis_name)
  return task, True


# -- Private copy of the update half of train.make_train_step. -----------------
# GOES AWAY when train.py exposes it as `train.apply_gradients` (proposed in
# the report); until then, keep it line for line equal to train.train_step.
def _apply_gradients(run, state, grads, loss, sums, model_state):
  """Optimizer update, weight averaging and the nonfinite policy."""
  tx, opt_cfg = run.tx, run.config.optimizer
  skip = run.config.train.nonfinite == "skip"
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  avg_params = state.avg_params
  if avg_params is not None:
    avg_params = optax.incremental_update(
        params, avg_params, optim.average_step_size(opt_cfg, state.step))
  finite = jnp.stack([jnp.all(jnp.isfinite(x))
                      for x in jax.tree.leaves((loss, grads, params))])
  ok = jnp.all(finite)
  new_state = state.replace(params=params, opt_state=opt_state,
                            model_state=model_state, avg_params=avg_params)
  if skip:
    new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old),
                             new_state, state)
  new_state = new_state.replace(
      step=state.step + 1,
      nonfinite_streak=jnp.where(ok, 0, state.nonfinite_streak + 1))
  step_metrics = {**run.task.finalize(sums), "loss": loss,
                  "grad_norm": optax.tree.norm(grads),
                  "learning_rate": run.schedule(state.step)}
  health = {"finite": ok, "first_nonfinite": jnp.argmin(finite),
            "streak": new_state.nonfinite_streak}
  return new_state, step_metrics, health
# -- End of the private copy. ---------------------------------------------------


def _tower_step(run, task, axes, synced: bool, vary_params: bool):
  """One tower's step: local loss and gradients, all-reduce, same update."""

  def tower_step(state, batch):  # batch: this device's slice
    # Each tower draws its own dropout masks.
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                             lax.axis_index(axes))
    params = state.params
    if vary_params:
      # shard_map types values as replicated (invariant) or varying over the
      # axes. Gradients of invariant params would come back already summed
      # over the devices (the transpose of their implicit broadcast); marking
      # them varying gives each tower its own copy and its own gradients, and
      # the all-reduce below is the one the lectures draw.
      params = lax.pcast(params, axes, to="varying")
    grad_fn = jax.value_and_grad(task.loss, has_aux=True)
    (loss, (sums, model_state)), grads = grad_fn(
        params, state.model_state, batch, rng)
    grads = lax.pmean(grads, axes)  # the all-reduce of the towers' gradients
    loss = lax.pmean(loss, axes)  # towers hold equal shares of the batch
    sums = lax.psum(sums, axes)  # metrics of the whole global batch
    if not synced:
      # Per-device running statistics -> their mean, so the replicas agree
      # (flax's ImageNet example does the same, `sync_batch_stats`).
      model_state = lax.pmean(model_state, axes)
    return _apply_gradients(run, state, grads, loss, sums, model_state)

  return tower_step


def make_shard_map_train_step(run: train.Run, cross_replica_batch_norm=True):
  """The data-parallel step written with jax.shard_map; a drop-in for
  `train.make_train_step(run)`: (state, batch) -> (state, metrics, health),
  jitted with the same shardings, state donated.

  The state enters every device whole (replicated), the batch split over the
  mesh's batch axes (`config.sharding.rules`' "batch" entry). Mesh axes
  outside the batch axes stay automatic (jit partitions them).
  """
  axes = sharding.batch_axes(run.rules, run.mesh)
  if not axes:
    raise ValueError(
        "make_shard_map_train_step splits the batch over the mesh axes of the"
        f" 'batch' rule, but config.sharding.rules={run.rules} has none; add"
        " e.g. ('batch', ('data', 'fsdp')).")
  task, synced = _tower_task(run.task, axes, cross_replica_batch_norm)
  step = jax.shard_map(
      _tower_step(run, task, axes, synced, vary_params=True),
      mesh=run.mesh, in_specs=(P(), P(axes)), out_specs=P(),
      axis_names=frozenset(axes))
  replicated = NamedSharding(run.mesh, P())
  return jax.jit(step,
                 in_shardings=(run.state_shardings, run.batch_sharding),
                 out_shardings=(run.state_shardings, replicated, replicated),
                 donate_argnums=0)


def _pmap_devices(run: train.Run) -> list:
  """The run's devices in mesh order; refuses any mesh but a pure data one."""
  split = {name: size for name, size in run.mesh.shape.items()
           if size > 1 and name != "data"}
  if split or sharding.batch_axes(run.rules, run.mesh)[:1] != ("data",):
    raise ValueError(
        "make_pmap_train_step needs a pure data-parallel mesh"
        f" (config.mesh = {{'data': -1}} and the batch split over 'data'); got"
        f" mesh {mesh_lib.describe(run.mesh)} and config.sharding.rules"
        f"={run.rules}. Use make_shard_map_train_step or train.make_train_step.")
  return list(run.mesh.devices.flat)


def make_pmap_train_step(run: train.Run, cross_replica_batch_norm=True):
  """The classic jax.pmap data-parallel step, axis name "batch".

  (replicated state, split batch) -> (replicated state, metrics, health):
  the state as `replicate_state` gives it, the batch as `split_batch` gives
  it; metrics and health are single values (they are equal on all devices).
  Needs a pure data mesh (`config.mesh = {"data": -1}`).
  """
  devices = _pmap_devices(run)
  task, synced = _tower_task(run.task, PMAP_AXIS, cross_replica_batch_norm)
  # Under pmap every argument is per device already (no implicit broadcast),
  # so the params need no marking to give each tower its own gradients.
  return jax.pmap(_tower_step(run, task, PMAP_AXIS, synced, vary_params=False),
                  axis_name=PMAP_AXIS, devices=devices,
                  out_axes=(0, None, None), donate_argnums=0)


def replicate_state(run: train.Run, state):
  """Train state on the mesh -> one copy per device, stacked on axis 0."""
  local = [d for d in _pmap_devices(run) if d.process_index == jax.process_index()]
  return flax.jax_utils.replicate(state, devices=local)


def unreplicate_state(run: train.Run, state):
  """One replica of a pmap state, laid out on the mesh like `run.init_fn`'s."""
  return jax.device_put(flax.jax_utils.unreplicate(state), run.state_shardings)


def split_batch(run: train.Run, batch):
  """This process's batch [batch, ...] -> [local devices, per device, ...]."""
  local = sum(d.process_index == jax.process_index() for d in _pmap_devices(run))
  return jax.tree.map(
      lambda x: np.asarray(x).reshape(local, -1, *np.shape(x)[1:]), batch)
