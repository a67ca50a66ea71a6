"""Synchronous data parallelism three ways (jit, shard_map, pmap) is one
algorithm: from the same state on the same global batches, each gives the
metrics and parameters of a single device on the whole batch."""

import os

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from deeplearn import config as config_lib, models, step as step_lib
from deeplearn.schemes import supervised
from deeplearn.models.convnet import DIGITS
from deeplearn.parallel import data_parallel, sharding
from parallel_helpers import (assert_same_run, global_batches, initial_state,
                              run_steps)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BN_MLP = dict(name="mlp", num_classes=10, hidden_sizes=(32, 32),
              batch_norm=True)


def tiny_config(data_dir, model=None):
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny"))
  config.data.data_dir = data_dir
  if model:
    config.unlock()
    config.model = ml_collections.ConfigDict(model)
    config.lock()
  return config


@pytest.fixture(scope="module")
def cnn(tfds_data_dir):
  """The MNIST-1D CNN's 8-device run, its start, batches, and the 1-device
  jit run from there: the reference every other form must reproduce."""
  config = tiny_config(tfds_data_dir)
  one = supervised.build(config, devices=jax.devices()[:1])
  eight = supervised.build(config)
  init, batches = initial_state(eight), global_batches(config)
  reference = run_steps(one, step_lib.make_train_step(one), init, batches)
  return eight, init, batches, reference


def test_jit_shard_map_and_pmap_on_8_devices_equal_one_device(cnn):
  eight, init, batches, reference = cnn
  assert eight.mesh.size == 8
  losses = [m["loss"] for m in reference[0]]
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]  # it learns
  assert_same_run(run_steps(eight, step_lib.make_train_step(eight), init,
                            batches), reference)
  assert_same_run(run_steps(eight, data_parallel.make_shard_map_train_step(
      eight), init, batches), reference)
  assert_same_run(run_steps(eight, data_parallel.make_pmap_train_step(eight),
                            init, batches, pmap=True), reference)


def test_shard_map_over_data_leaves_the_model_axis_to_jit(cnn, tfds_data_dir):
  """data=4 explicit towers, each a 2-device tensor-parallel group (the
  classifier split over `model`), still equal one device."""
  _, init, batches, reference = cnn
  config = tiny_config(tfds_data_dir)
  config.mesh = ml_collections.ConfigDict({"data": 4, "model": 2})
  config.sharding.rules = (("batch", ("data", "fsdp")), ("vocab", "model"))
  run = supervised.build(config)
  assert "model" in str(run.state_shardings.params["Dense_0"]["kernel"].spec)
  assert_same_run(run_steps(run, data_parallel.make_shard_map_train_step(run),
                            init, batches), reference)


def test_shard_map_step_compiles_to_an_all_reduce(cnn):
  eight, init, batches, _ = cnn
  step = data_parallel.make_shard_map_train_step(eight)
  hlo = step.lower(jax.device_put(init, eight.state_shardings),
                   sharding.global_batch(batches[0], eight.batch_sharding)
                   ).compile().as_text()
  assert "all-reduce" in hlo


def test_synced_batch_norm_equals_one_device_per_device_does_not(
    tfds_data_dir):
  config = tiny_config(tfds_data_dir, BN_MLP)
  one, eight = supervised.build(config, devices=jax.devices()[:1]), supervised.build(config)
  init, batches = initial_state(eight), global_batches(config)
  assert init.model_state["batch_stats"]  # the model has batch norm
  reference = run_steps(one, step_lib.make_train_step(one), init, batches)
  assert_same_run(run_steps(eight, data_parallel.make_shard_map_train_step(
      eight), init, batches), reference)
  assert_same_run(run_steps(eight, data_parallel.make_pmap_train_step(eight),
                            init, batches, pmap=True), reference)
  per_device = run_steps(eight, data_parallel.make_shard_map_train_step(
      eight, cross_replica_batch_norm=False), init, batches)
  assert not np.allclose(per_device[0][0]["loss"], reference[0][0]["loss"],
                         rtol=1e-3)


def test_convnet_batch_norm_with_the_axis_name_sees_the_whole_batch():
  """Each device's 2 images, normalised with statistics averaged over the 8
  devices, give the logits and running statistics of the 16 images on one."""
  model = models.get_model(dict(name="convnet", batch_norm=True, **DIGITS))
  x = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
  variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(x)
  assert set(variables) == {"params", "batch_stats"}
  whole = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                           mutable=["batch_stats"]))(variables, x)
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))

  tower = model.clone(bn_axis_name="data")
  synced = jax.jit(jax.shard_map(
      lambda v, x: tower.apply(v, x, train=True, mutable=["batch_stats"]),
      mesh=mesh, in_specs=(P(), P("data")), out_specs=(P("data"), P()),
      check_vma=False))(variables, x)
  for a, b in zip(jax.tree.leaves(synced), jax.tree.leaves(whole),
                  strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_explicit_steps_keep_averaging_skip_policy_and_accumulation(
    tfds_data_dir):
  """EMA weights, a skipped non-finite update and 2 micro-batches per step
  (batch norm per micro-batch, a scan) come out as in the jit step. (The
  pmap step runs the same tower function.)"""
  config = tiny_config(tfds_data_dir, BN_MLP)
  config.optimizer.averaging = "ema"
  config.train.nonfinite = "skip"
  config.train.grad_accum_steps = 2
  eight = supervised.build(config)
  init, batches = initial_state(eight), global_batches(config)
  batches[2] = dict(batches[2], inputs=np.full_like(batches[2]["inputs"],
                                                    np.nan))
  reference = run_steps(eight, step_lib.make_train_step(eight), init, batches)
  assert [h["finite"] for h in reference[1]] == [True, True, False, True, True]
  assert reference[1][2]["streak"] == 1
  assert_same_run(run_steps(eight, data_parallel.make_shard_map_train_step(
      eight), init, batches), reference)


def test_pmap_step_refuses_a_mesh_that_is_not_pure_data(tfds_data_dir):
  config = tiny_config(tfds_data_dir)
  config.mesh = ml_collections.ConfigDict({"data": 4, "model": 2})
  with pytest.raises(ValueError, match="pure data-parallel mesh"):
    data_parallel.make_pmap_train_step(supervised.build(config))
