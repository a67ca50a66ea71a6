"""Synchronous data parallelism three ways (jit, shard_map, pmap) is one
algorithm: from the same state on the same global batches, each gives the
losses and parameters of a single device on the whole batch."""

import itertools
import os

import jax
import ml_collections
import numpy as np
import pytest

from deeplearn import config as config_lib, data, train
from deeplearn.parallel import data_parallel, sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6
RTOL = 1e-5


def tiny_config(data_dir, **model):
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny"))
  config.data.data_dir = data_dir
  config.train.progress = False
  if model:
    config.unlock()
    config.model = ml_collections.ConfigDict(model)
    config.lock()
  return config


def global_batches(config, num):
  ds = data.train_dataset(config.data, seed=config.train.seed,
                          process_index=0, process_count=1)
  return list(itertools.islice(iter(ds), num))


def run_steps(run, step, batches, replicated=False):
  """Losses, metrics, healths and the final state (unreplicated, on host)."""
  state = run.init_fn(run.config.train.seed)
  if replicated:
    state = data_parallel.replicate_state(run, state)
  metrics, healths = [], []
  for batch in batches:
    batch = (data_parallel.split_batch(run, batch) if replicated
             else sharding.global_batch(batch, run.batch_sharding))
    state, step_metrics, health = step(state, batch)
    metrics.append(step_metrics)
    healths.append(health)
  if replicated:
    state = data_parallel.unreplicate_state(run, state)
  return jax.device_get((metrics, healths, state))


def assert_same_run(got, want):
  """Metrics per step and the final state agree to RTOL of each leaf's scale."""
  (got_metrics, got_health, got_state), (metrics, health, state) = got, want
  for a, b in zip(got_metrics, metrics):
    assert a.keys() == b.keys()
    for key in b:
      np.testing.assert_allclose(a[key], b[key], rtol=RTOL, err_msg=key)
  assert got_health == health
  for path, a in jax.tree_util.tree_flatten_with_path(got_state)[0]:
    b = _at(state, path)
    np.testing.assert_allclose(
        a, b, rtol=RTOL, atol=RTOL * np.max(np.abs(b), initial=1e-30),
        err_msg=jax.tree_util.keystr(path))


def _at(tree, path):
  for key in path:
    tree = tree[key.key] if hasattr(key, "key") else (
        getattr(tree, key.name) if hasattr(key, "name") else tree[key.idx])
  return tree


@pytest.fixture(scope="module")
def cnn_runs(tfds_data_dir):
  config = tiny_config(tfds_data_dir)
  return (train.build(config, devices=jax.devices()[:1]), train.build(config),
          global_batches(config, STEPS))


def test_jit_shard_map_and_pmap_on_8_devices_equal_one_device(cnn_runs):
  one, eight, batches = cnn_runs
  assert one.mesh.size == 1 and eight.mesh.size == 8
  reference = run_steps(one, train.make_train_step(one), batches)
  assert np.isfinite(reference[0][-1]["loss"])
  assert reference[0][-1]["loss"] < reference[0][0]["loss"]  # it trains
  assert_same_run(run_steps(eight, train.make_train_step(eight), batches),
                  reference)
  assert_same_run(run_steps(eight, data_parallel.make_shard_map_train_step(
      eight), batches), reference)
  assert_same_run(run_steps(eight, data_parallel.make_pmap_train_step(eight),
                            batches, replicated=True), reference)


def test_shard_map_step_compiles_to_an_all_reduce(cnn_runs):
  _, eight, batches = cnn_runs
  state = jax.eval_shape(eight.init_fn, eight.config.train.seed)
  batch = sharding.global_batch(batches[0], eight.batch_sharding)
  hlo = data_parallel.make_shard_map_train_step(eight).lower(
      state, batch).compile().as_text()
  assert "all-reduce" in hlo


def test_pmap_step_refuses_a_mesh_that_is_not_pure_data(tfds_data_dir):
  config = tiny_config(tfds_data_dir)
  config.mesh = ml_collections.ConfigDict({"data": 4, "model": 2})
  with pytest.raises(ValueError, match="pure data-parallel mesh"):
    data_parallel.make_pmap_train_step(train.build(config))


BN_MODELS = {
    "mlp": dict(name="mlp", num_classes=10, hidden_sizes=(32, 32),
                batch_norm=True),
}


@pytest.mark.parametrize("family", BN_MODELS)
def test_synced_batch_norm_equals_one_device_per_device_does_not(
    tfds_data_dir, family):
  config = tiny_config(tfds_data_dir, **BN_MODELS[family])
  one, eight = train.build(config, devices=jax.devices()[:1]), train.build(config)
  batches = global_batches(config, STEPS)
  reference = run_steps(one, train.make_train_step(one), batches)
  assert reference[2].model_state["batch_stats"]  # BN is in the model
  assert_same_run(run_steps(eight, data_parallel.make_shard_map_train_step(
      eight), batches), reference)
  assert_same_run(run_steps(eight, data_parallel.make_pmap_train_step(eight),
                            batches, replicated=True), reference)
  per_device = run_steps(eight, data_parallel.make_shard_map_train_step(
      eight, cross_replica_batch_norm=False), batches)
  with pytest.raises(AssertionError):
    assert_same_run(per_device, reference)
