"""Pipeline parallelism (deeplearn/parallel/pipeline.py): on the `stage` axis,
alone, with `data` and with `fsdp`, both schedules train to the loss, gradients and
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

from deeplearn import config as config_lib, step as step_lib
from deeplearn.schemes import supervised
from deeplearn.parallel import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(ROOT, "experiments", "shakespeare_transformer_pipeline.py")
# name: (mesh, devices)
MESHES = {"stage": ({"stage": 4}, 4), "data_x_stage": ({"data": 2, "stage": 4}, 8),
          "fsdp_x_stage": ({"fsdp": 2, "stage": 4}, 8)}
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
  one = supervised.build(config, devices=jax.devices()[:1])
  init = jax.device_get(one.init_fn(config.train.seed))
  batch = batch_of(config)
  state, metrics, _ = step_lib.make_train_step(one)(
      jax.device_put(init, one.state_shardings), batch)
  return init, batch, jax.device_get((state, metrics))


@pytest.fixture(scope="module")
def compiled(tfds_data_dir):
  """Per (schedule, mesh): the run and its step, compiled once."""
  cache = {}

  def get(schedule, mesh):
    if (schedule, mesh) not in cache:
      shape, devices = MESHES[mesh]
      config = make_config(tfds_data_dir, schedule, shape)
      if "fsdp" in shape:  # parameters stored split over fsdp too
        config.sharding.rules = config_lib.FSDP_RULES + (("layers", "stage"),)
      run = supervised.build(config, devices=jax.devices()[:devices])
      step = pipeline.make_pipeline_train_step(run)
      state = step_lib.abstract_state(run)
      batch = jax.ShapeDtypeStruct(
          (run.config.data.batch_size, run.config.data.seq_len), np.int32,
          sharding=run.batch_sharding)
      cache[schedule, mesh] = run, step.lower(
          state, {"inputs": batch, "targets": batch}).compile()
    return cache[schedule, mesh]

  return get


# The stage-only mesh (no batch axes) and fsdp x stage run one schedule
# each: every compile of the pipelined step takes seconds, and the schedules
# share those code paths.
@pytest.mark.parametrize("schedule, mesh", [
    ("gpipe", "data_x_stage"), ("1f1b", "data_x_stage"), ("gpipe", "stage"),
    ("1f1b", "fsdp_x_stage")])
def test_pipelined_step_equals_the_unpipelined_model(
    compiled, reference, schedule, mesh):
  run, step = compiled(schedule, mesh)
  init, batch, (want_state, want_metrics) = reference
  assert run.mesh.shape["stage"] == 4
  fsdp = "fsdp" if mesh == "fsdp_x_stage" else None
  assert run.state_shardings.params["blocks"]["mlp"]["fc"]["kernel"].spec == P(
      "stage", fsdp, None)
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


def test_1f1b_compiles_to_less_temporary_memory_than_gpipe(compiled):
  """m = 8 micro-batches on p = 4 stages: GPipe keeps every stage's 8 inputs
  (and 8 incoming gradients) until the flush, 1F1B at most 5."""
  runs = {s: compiled(s, "data_x_stage") for s in pipeline.SCHEDULES}
  temp = {s: step.memory_analysis().temp_size_in_bytes
          for s, (_, step) in runs.items()}
  config = runs["1f1b"][0].config
  m, p = config.train.microbatches, 4
  assert m == 8
  slots = {s: pipeline.buffer_slots(*pipeline.schedule(s, p, m))
           for s in pipeline.SCHEDULES}
  assert slots == {"gpipe": 8, "1f1b": 5}
  per_slot = (config.data.batch_size // 2 // m * config.data.seq_len
              * config.model.embed_dim * 4)  # float32 [micro, length, embed]
  assert temp["gpipe"] - temp["1f1b"] >= 2 * (8 - 5) * per_slot, temp


@pytest.mark.parametrize("m", [1, 2, 3, 8, 16])
@pytest.mark.parametrize("p", [1, 2, 4])
def test_timetables_keep_the_dependencies_and_the_theoretical_bubble(p, m):
  for kind in pipeline.SCHEDULES:
    fwd, bwd = pipeline.schedule(kind, p, m)
    tick = {}  # (F or B, stage, micro-batch) -> tick
    for op, table in (("F", fwd), ("B", bwd)):
      for t, s in zip(*np.nonzero(table >= 0)):
        key = (op, int(s), int(table[t, s]))
        assert key not in tick  # each op runs once
        tick[key] = t
    assert len(tick) == 2 * p * m
    for s in range(p):
      for j in range(m):
        assert s == 0 or tick["F", s - 1, j] < tick["F", s, j]
        assert tick["F", s, j] <= tick["B", s, j]  # B after F in a tick
        assert s == p - 1 or tick["B", s + 1, j] < tick["B", s, j]
        if kind == "gpipe":  # the flush: every F before any B
          assert tick["F", s, m - 1] <= tick["B", s, j]
    for backward_cost in (1.0, 3.0):  # in lockstep ticks
      np.testing.assert_allclose(
          pipeline.bubble_fraction(fwd, bwd, backward_cost),
          (p - 1) / (m + p - 1), err_msg=f"{kind} {backward_cost}")
    if kind == "1f1b":  # forwards waiting for their backward, per stage
      waiting = np.cumsum(fwd >= 0, axis=0) - np.cumsum(bwd >= 0, axis=0)
      assert (waiting.max(axis=0) <= 2 * (p - np.arange(p)) - 1).all()
  # One stage receives nothing: it keeps no buffer beyond one slot.
  assert pipeline.buffer_slots(*pipeline.schedule("gpipe", p, m)) == (
      m if p > 1 else 1)
  assert pipeline.buffer_slots(*pipeline.schedule("1f1b", p, m)) <= min(
      m, 2 * p - 1)


@pytest.mark.parametrize("change, match", [
    (dict(pipeline_schedule="gpipee"), "did you mean 'gpipe'"),
    (dict(microbatches=3), "microbatches=3"),
    (dict(grad_accum_steps=2), "grad_accum_steps=1"),
    (dict(scan_layers=False), "scan_layers=True"),
    (dict(num_layers=6), "num_layers=6"),
])
def test_bad_pipeline_configs_are_refused_before_compiling(
    tfds_data_dir, change, match):
  config = make_config(tfds_data_dir)
  model = {k: change.pop(k) for k in ("scan_layers", "num_layers") if k in change}
  config.model.update(model)
  config.train.update(change)
  with pytest.raises(ValueError, match=match):
    supervised.build(config)


@pytest.mark.parametrize("change, match", [
    (dict(rules=config_lib.DATA_PARALLEL_RULES), r"\('layers', 'stage'\)"),
    (dict(mesh={"data": 1, "stage": 4, "model": 2}), "config.mesh.model"),
])
def test_runs_the_pipeline_cannot_split_are_refused(tfds_data_dir, change,
                                                    match):
  config = make_config(tfds_data_dir, mesh=change.get("mesh"))
  if "rules" in change:
    config.sharding.rules = change["rules"]
  with pytest.raises(ValueError, match=match):
    pipeline.make_pipeline_train_step(supervised.build(config))
