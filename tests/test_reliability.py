"""Runs that survive: SIGKILL, SIGTERM, non-finite values, dead peers."""

import json
import os
import random
import signal
import socket
import subprocess

import jax
import numpy as np
import pytest

from deeplearn import (checkpoint, config as config_lib, data, loop, step as step_lib,
                       train)
from deeplearn.schemes import supervised
from run_helpers import start_cli, wait_for_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# MNIST-1D MLP with dropout, batch 32: 125 steps per epoch, so a 300-step run
# crosses two epoch boundaries; checkpoints every 7 steps fall on both sides.
DROPOUT_EXPERIMENT = """
import ml_collections
from deeplearn.config import from_file

def get_config(arg=None):
  config = from_file({recipe!r} + ":tiny")
  config.model = ml_collections.ConfigDict({{
      "name": "mlp", "num_classes": 10, "hidden_sizes": (64, 64),
      "dropout_rate": 0.3}})
  config.data.data_dir = {data_dir!r}
  config.train.update(num_steps=300, log_every=1, eval_every=1000,
                      checkpoint_every=7, keep_checkpoints=3, progress=False)
  return config
"""


@pytest.fixture(scope="module")
def dropout_experiment(tfds_data_dir, tmp_path_factory):
  path = tmp_path_factory.mktemp("exp") / "mnist1d_mlp_dropout.py"
  path.write_text(DROPOUT_EXPERIMENT.format(
      recipe=os.path.join(ROOT, "experiments", "mnist1d_cnn.py"),
      data_dir=tfds_data_dir))
  return str(path)


@pytest.fixture(scope="module")
def uninterrupted(dropout_experiment, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  config = config_lib.from_file(dropout_experiment)
  train.train_and_evaluate(config, workdir)
  return config, workdir


def final_params(workdir, config):
  run = supervised.build(config)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  abstract = step_lib.abstract_state(run)
  state, step = ckpt.restore_latest(abstract)
  ckpt.close()
  return step, jax.device_get(state)


def assert_states_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(
    dropout_experiment, uninterrupted, tmp_path):
  config, reference = uninterrupted
  kill_at = random.Random().randint(100, 260)  # the message names it
  workdir = tmp_path / "killed"
  proc = start_cli(dropout_experiment, workdir)
  wait_for_records(proc, workdir, kill_at)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = start_cli(dropout_experiment, workdir)
  out, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, err[-3000:]
  assert "resuming at step" in out, f"killed at record {kill_at}: {out}"
  step, state = final_params(str(workdir), config)
  ref_step, ref_state = final_params(reference, config)
  assert step == ref_step == 300
  assert_states_equal(state, ref_state)


def test_resume_without_the_iterator_state_differs(
    dropout_experiment, uninterrupted, tmp_path, monkeypatch):
  """The bitwise test above can fail: drop the data state and it does."""
  config, reference = uninterrupted
  workdir = str(tmp_path / "no_iterator")
  half = config_lib.from_file(dropout_experiment)
  half.train.num_steps = 140  # past the first epoch boundary
  train.train_and_evaluate(half, workdir)
  restore = checkpoint.Checkpointer.restore_latest
  monkeypatch.setattr(
      checkpoint.Checkpointer, "restore_latest",
      lambda self, abstract, data_iterator=None: restore(self, abstract, None))
  train.train_and_evaluate(config, workdir)
  _, state = final_params(workdir, config)
  _, ref_state = final_params(reference, config)
  assert not all(np.array_equal(x, y) for x, y in zip(
      jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)))


def test_sigterm_saves_at_the_next_step_and_exits_zero(dropout_experiment,
                                                       tmp_path):
  workdir = tmp_path / "preempted"
  proc = start_cli(dropout_experiment, workdir)
  wait_for_records(proc, workdir, 20)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err[-3000:]
  assert "preempted: saved a checkpoint at step" in out
  step = int(out.split("at step ")[1].split()[0])
  assert 20 <= step < 300
  assert (workdir / "checkpoints" / str(step)).is_dir()
  assert not (workdir / "summary.json").exists()
  again = start_cli(dropout_experiment, workdir)
  out, err = again.communicate(timeout=300)
  assert again.returncode == 0, err[-3000:]
  assert f"resuming at step {step}" in out and "done:" in out


class PoisonedBatches:
  """Wraps the train dataset: NaN inputs in the batches of `steps` (1-based)."""

  def __init__(self, make, steps):
    self.make, self.steps = make, set(steps)

  def __call__(self, *args, **kwargs):
    calls = iter(range(1, 10 ** 9))

    def poison(batch):
      if next(calls) in self.steps:
        batch = {**batch, "inputs": np.full_like(batch["inputs"], np.nan)}
      return batch

    return self.make(*args, **kwargs).map(poison)


def nan_config(tfds_data_dir, policy, **train_overrides):
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny"))
  config.data.data_dir = tfds_data_dir
  config.train.update({"num_steps": 20, "log_every": 10, "eval_every": 20,
                       "checkpoint_every": 5, "progress": False,
                       "nonfinite": policy, **train_overrides})
  return config


def test_nan_stops_naming_the_step_and_leaf_and_keeps_the_checkpoint(
    tfds_data_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(data, "train_dataset",
                      PoisonedBatches(data.train_dataset, [7]))
  config = nan_config(tfds_data_dir, "stop")
  workdir = str(tmp_path / "nan")
  with pytest.raises(loop.NonFiniteError, match=r"at step 7: first in 'loss'"):
    train.train_and_evaluate(config, workdir)
  step, state = final_params(workdir, config)
  assert step == 5  # the last good checkpoint; nothing non-finite was saved
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["5"]


def test_nan_skip_policy_drops_updates_then_stops_when_they_persist(
    tfds_data_dir, tmp_path, monkeypatch):
  make = data.train_dataset
  monkeypatch.setattr(data, "train_dataset", PoisonedBatches(make, [7, 8]))
  config = nan_config(tfds_data_dir, "skip", max_nonfinite_skips=2)
  summary = train.train_and_evaluate(config, str(tmp_path / "skip"))
  assert summary["final"]["step"] == 20 and np.isfinite(summary["final"]["loss"])
  _, state = final_params(str(tmp_path / "skip"), config)
  assert int(state.nonfinite_streak) == 0 and int(state.step) == 20

  monkeypatch.setattr(data, "train_dataset",
                      PoisonedBatches(make, [7, 8, 9]))
  with pytest.raises(loop.NonFiniteError, match=r"step 9.*3 non-finite"):
    train.train_and_evaluate(config, str(tmp_path / "persist"))


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start_two_processes(experiment, workdir, *extra):
  env = {**os.environ,
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  port = _free_port()
  return [start_cli(experiment, workdir, f"--coordinator_address=localhost:{port}",
                    "--num_processes=2", f"--process_id={i}",
                    "--heartbeat_timeout_s=10", *extra, env=env)
          for i in range(2)]


def test_sigterm_in_two_processes_saves_the_same_step(dropout_experiment,
                                                      tmp_path):
  workdir = tmp_path / "two"
  procs = start_two_processes(dropout_experiment, workdir)
  wait_for_records(procs[0], workdir, 20, timeout=180)
  procs[1].send_signal(signal.SIGTERM)  # one process told, both must stop
  outs = [p.communicate(timeout=120) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  out0 = outs[0][0]
  assert "preempted: saved a checkpoint at step" in out0, out0
  step = int(out0.split("at step ")[1].split()[0])
  assert (workdir / "checkpoints" / str(step)).is_dir()
  # Both processes wrote their data-iterator state for that same step.
  data_dir = workdir / "checkpoints" / str(step) / "data"
  states = [json.loads((data_dir / f"process_{i}-of-2.json").read_text())
            for i in range(2)]
  assert states[0] == states[1], states  # each consumed `step` batches


def test_a_dead_peer_makes_the_other_process_exit_with_an_error(
    dropout_experiment, tmp_path):
  workdir = tmp_path / "peer"
  procs = start_two_processes(dropout_experiment, workdir,
                              "--config.train.num_steps=100000")
  wait_for_records(procs[0], workdir, 10, timeout=180)
  procs[1].send_signal(signal.SIGKILL)
  try:
    procs[0].communicate(timeout=90)
  except subprocess.TimeoutExpired:
    procs[0].kill()
    pytest.fail("the surviving process hung after its peer died")
  assert procs[0].returncode != 0


def test_resume_refuses_a_config_that_changes_the_model(tfds_data_dir,
                                                        tmp_path):
  config = nan_config(tfds_data_dir, "stop", num_steps=5)
  workdir = str(tmp_path / "changed")
  train.train_and_evaluate(config, workdir)
  config.optimizer.learning_rate = 0.05
  config.train.num_steps = 10  # safe: allowed, and reported
  with pytest.raises(ValueError, match=r"optimizer.learning_rate: 0.01 -> 0.05"):
    train.train_and_evaluate(config, workdir)
  config.optimizer.learning_rate = 0.01
  summary = train.train_and_evaluate(config, workdir)
  assert summary["resumed_from"] == 5 and summary["final"]["step"] == 10


def test_unwritable_workdir_fails_before_building_anything(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  config = nan_config(str(tmp_path / "tfds_never"), "stop")
  with pytest.raises(ValueError, match="cannot be created"):
    train.train_and_evaluate(config, str(blocker / "run"))
  assert not (tmp_path / "tfds_never").exists()
