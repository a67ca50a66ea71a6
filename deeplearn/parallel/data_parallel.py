"""Synchronous data parallelism with the collectives written out.

Lecture concept: synchronous SGD as towers. Every device holds a copy of the
weights, computes the loss and gradients of its slice of the batch, the
gradients are averaged across devices (an all-reduce) and every replica
applies the same update, so the copies never drift apart. The train loop's
step (`step_lib.make_train_step`) gets the same result automatically: jit with
the batch sharded over the `data` axis, and XLA inserts the all-reduce. The
two explicit forms here show it:

  make_shard_map_train_step  jax.shard_map over the mesh's batch axes, with
                             lax.pmean / lax.psum: a drop-in for the jit step.
  make_pmap_train_step       the classic jax.pmap form on a pure data mesh,
                             with the state replicated per device
                             (replicate_state / unreplicate_state) and the
                             batch split [devices, per_device, ...].
  make_local_sgd_train_step  local SGD's towers: each device steps its own
                             replica, the replicas meet every H steps
                             (the optimizer: deeplearn/parallel/local_sgd.py).

Batch norm: a tower sees only its slice, so per-device statistics differ from
the single-device ones. With `cross_replica_batch_norm` (the default) the
models' `bn_axis_name` is set to the batch axes and flax averages the
statistics across towers (synchronised batch norm, as in Goyal et al. 2017,
"Accurate, large minibatch SGD"); the run then equals one device on the
whole batch. Without it each tower normalises by its own statistics and the
running averages are averaged after the step.
"""

import dataclasses

import flax.jax_utils
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from deeplearn import step as step_lib
from deeplearn.parallel import mesh as mesh_lib, sharding

PMAP_AXIS = "batch"


def _tower_run(run: step_lib.Run, axis_name, cross_replica_batch_norm: bool):
  """The run whose model averages batch statistics over `axis_name`.

  Returns (run, synced): synced says the new model state comes out the same
  on every tower. Models without a `bn_axis_name` field keep per-device
  statistics.
  """
  model = run.task.model
  if not (cross_replica_batch_norm and hasattr(model, "bn_axis_name")):
    return run, False
  task = dataclasses.replace(run.task,
                             model=model.clone(bn_axis_name=axis_name))
  return dataclasses.replace(run, task=task), True


def _tower_step(run: step_lib.Run, axes, cross_replica_batch_norm: bool):
  """One tower's step: local loss and gradients, all-reduce, same update.

  Written for untyped replication (pmap, shard_map with check_vma=False):
  the gradients of the replicated params are this tower's own, and the
  pmean below is the only all-reduce.
  """
  tower_run, synced = _tower_run(run, axes, cross_replica_batch_norm)

  def tower_step(state, batch):  # batch: this device's slice
    # Each tower draws its own dropout masks.
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                             lax.axis_index(axes))
    # Gradient accumulation, if configured, runs on the local slice: its
    # strided micro-batches, over all towers, are the jit step's micro-batches.
    loss, sums, model_state, grads = step_lib.compute_grads(
        tower_run, state.params, state.model_state, batch, rng)
    grads = lax.pmean(grads, axes)  # the all-reduce of the towers' gradients
    loss = lax.pmean(loss, axes)  # towers hold equal shares of the batch
    sums = lax.psum(sums, axes)  # metrics of the whole global batch
    if not synced:
      # Per-device running statistics -> their mean, so the replicas agree
      # (flax's ImageNet example does the same, `sync_batch_stats`).
      model_state = lax.pmean(model_state, axes)
    return step_lib.apply_gradients(run, state, loss, sums, model_state, grads)

  return tower_step


def make_shard_map_train_step(run: step_lib.Run, cross_replica_batch_norm=True):
  """The data-parallel step written with jax.shard_map; a drop-in for
  `step_lib.make_train_step(run)`: (state, batch) -> (state, metrics, health),
  jitted with the same shardings, state donated.

  The state enters every device whole (replicated), the batch split over the
  mesh's batch axes (`config.sharding.rules`' "batch" entry). Mesh axes
  outside the batch axes stay automatic (jit partitions them). Dropout masks
  are drawn per tower, so with dropout the forms agree in distribution, not
  bit for bit.
  """
  axes = sharding.batch_axes(run.rules, run.mesh)
  if not axes:
    raise ValueError(
        "make_shard_map_train_step splits the batch over the mesh axes of the"
        f" 'batch' rule, but config.sharding.rules={run.rules} has none; add"
        " e.g. ('batch', ('data', 'fsdp')).")
  # check_vma=False: with the default type checks, values that differ per
  # device are typed "varying", and every scan whose carry starts as zeros
  # (an RNN's state, gradient accumulation) fails to type-check, since its
  # output carry varies; the gradients of replicated params would also come
  # back already summed (the transpose of their implicit broadcast). The
  # unchecked form is pmap's semantics; the tests hold it to the jit step.
  towers = jax.shard_map(
      _tower_step(run, axes, cross_replica_batch_norm), mesh=run.mesh,
      in_specs=(P(), P(axes)), out_specs=P(), axis_names=frozenset(axes),
      check_vma=False)
  return run.jit_train_step(towers)


def _pmap_devices(run: step_lib.Run) -> list:
  """The run's devices in mesh order; refuses any mesh but a pure data one."""
  split = {name: size for name, size in run.mesh.shape.items()
           if size > 1 and name != "data"}
  if split or sharding.batch_axes(run.rules, run.mesh)[:1] != ("data",):
    raise ValueError(
        "make_pmap_train_step needs a pure data-parallel mesh"
        f" (config.mesh = {{'data': -1}} and the batch split over 'data'); got"
        f" mesh {mesh_lib.describe(run.mesh)} and config.sharding.rules"
        f"={run.rules}. Use make_shard_map_train_step or step_lib.make_train_step.")
  return list(run.mesh.devices.flat)


def make_pmap_train_step(run: step_lib.Run, cross_replica_batch_norm=True):
  """The classic jax.pmap data-parallel step, axis name "batch".

  (replicated state, split batch) -> (replicated state, metrics, health):
  the state as `replicate_state` gives it, the batch as `split_batch` gives
  it; metrics and health are single values (they are equal on all devices).
  Needs a pure data mesh (`config.mesh = {"data": -1}`). A form for study
  beside the loop's: its state is not donated.
  """
  devices = _pmap_devices(run)
  return jax.pmap(_tower_step(run, PMAP_AXIS, cross_replica_batch_norm),
                  axis_name=PMAP_AXIS, devices=devices,
                  out_axes=(0, None, None))


def replicate_state(run: step_lib.Run, state):
  """Train state on the mesh -> one copy per device, stacked on axis 0."""
  local = [d for d in _pmap_devices(run) if d.process_index == jax.process_index()]
  # Through the host: stacking on the devices would compile one op per leaf
  # shape. Named like pmap's own outputs' layout, or the second step would
  # compile again for the first step's outputs.
  return flax.jax_utils.replicate(jax.device_get(state), devices=local,
                                  axis_name=PMAP_AXIS)


def unreplicate_state(run: step_lib.Run, state):
  """One replica of a pmap state, laid out on the mesh like `run.init_fn`'s."""
  first = jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0],
                       state)
  return jax.device_put(first, run.state_shardings)


def split_batch(run: step_lib.Run, batch):
  """This process's batch [batch, ...] -> [local devices, per device, ...]."""
  local = sum(d.process_index == jax.process_index() for d in _pmap_devices(run))
  return jax.tree.map(
      lambda x: np.asarray(x).reshape(local, -1, *np.shape(x)[1:]), batch)


# -- local SGD's towers (deeplearn/parallel/local_sgd.py: the optimizer) -----


def make_local_sgd_train_step(run: step_lib.Run):
  """(state, batch) -> (state, metrics, health), like step_lib.make_train_step.

  Each device computes its replica's gradients at its replica's weights on
  its slice of the batch. Per step only scalars cross devices: the mean loss
  and metric sums, and a shared "some gradient is not finite" flag, so that
  every replica takes the same skip-or-stop decision.
  """
  axes = sharding.batch_axes(run.rules, run.mesh)
  if jax.tree.leaves(jax.eval_shape(run.init_fn,
                                    run.config.train.seed).model_state):
    raise ValueError(
        "config.train.step_form='local_sgd' does not support models with"
        f" batch statistics ({run.config.model.name}): use layer norm, or"
        " step_form 'jit'.")

  def tower_step(state, batch):  # batch: this replica's slice
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                             lax.axis_index(axes))
    own = jax.tree.map(lambda x: x[0], state.opt_state.params)
    loss, sums, model_state, grads = step_lib.compute_grads(
        run, own, state.model_state, batch, rng)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g))
                                for g in jax.tree.leaves(grads)]))
    all_finite = lax.pmin(finite.astype(jnp.int32), axes)
    loss = jnp.where(all_finite > 0, lax.pmean(loss, axes), jnp.nan)
    sums = lax.psum(sums, axes)
    return step_lib.apply_gradients(run, state, loss, sums, model_state, grads)

  replicas = P(axes)
  specs = jax.tree.map(lambda _: P(), run.state_shardings)
  specs = specs.replace(opt_state=specs.opt_state._replace(
      params=replicas, inner=replicas))
  towers = jax.shard_map(
      tower_step, mesh=run.mesh, in_specs=(specs, P(axes)),
      out_specs=(specs, P(), P()), axis_names=frozenset(axes),
      check_vma=False)  # pmap semantics, as in data_parallel.py
  return run.jit_train_step(towers)
