"""Every scheme gets the loop's reliability: a two-optimizer scheme (a tiny
GAN, tests/two_optimizer_scheme.py) and word2vec, like supervised runs
(tests/test_reliability.py, tests/test_checkpoint.py), resume bitwise after
SIGKILL, save and exit 0 on SIGTERM, and fall back past a damaged
checkpoint."""

import glob
import json
import os
import random
import signal

import jax
import numpy as np
import pytest

from deeplearn import checkpoint, config as config_lib, metrics, schemes, train

from run_helpers import start_cli, wait_for_records
import two_optimizer_scheme

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")

# Experiment files as a user would write them; `train` overrides.
EXPERIMENTS = {
    "two_optimizer": """
from two_optimizer_scheme import get_config as base

def get_config(arg=None):
  config = base()
  config.train.update({train!r})
  return config
""",
    "word2vec": """
from deeplearn.config import from_file

def get_config(arg=None):
  config = from_file({recipe!r} + ":tiny")
  config.train.update({train!r})
  return config
""",
}
SETTINGS = {  # steps, and a setting of the loop per scheme
    "two_optimizer": dict(num_steps=300, log_every=1, checkpoint_every=25),
    "word2vec": dict(progress=False, log_every=1, checkpoint_every=1),
}


def experiment(kind, directory, **train_overrides):
  path = os.path.join(str(directory), f"{kind}_experiment.py")
  with open(path, "w") as f:
    f.write(EXPERIMENTS[kind].format(
        recipe=os.path.join(ROOT, "experiments", "wiki_word2vec_skipgram_ns.py"),
        train={**SETTINGS[kind], **train_overrides}))
  return path


def env():
  return {**os.environ, "PYTHONPATH": os.pathsep.join(
      [TESTS, os.environ.get("PYTHONPATH", "")])}


def final_state(kind, path, workdir):
  scheme = schemes.get_scheme(config_lib.from_file(path))
  ckpt = checkpoint.Checkpointer(str(workdir), read_only=True)
  state, step = ckpt.restore_latest(scheme.abstract_state())
  ckpt.close()
  return step, jax.device_get(state)


def assert_states_equal(a, b):
  leaves = jax.tree.leaves(a)
  assert leaves
  for x, y in zip(leaves, jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module", params=["two_optimizer", "word2vec"])
def uninterrupted(request, tmp_path_factory):
  kind = request.param
  directory = tmp_path_factory.mktemp(kind)
  path = experiment(kind, directory)
  summary = train.train_and_evaluate(config_lib.from_file(path),
                                     str(directory / "run"))
  return kind, path, str(directory / "run"), summary


def test_a_two_optimizer_scheme_trains_in_the_loop(uninterrupted):
  kind, path, workdir, summary = uninterrupted
  if kind != "two_optimizer":
    pytest.skip("the GAN's own figures")
  # The generator learned the data's mean; both losses were logged.
  assert summary["final"]["mean_error"] < 0.3, summary["final"]
  assert summary["best"]["metric"] == "mean_error"
  records = metrics.read_records(os.path.join(workdir, "metrics.jsonl"), "train")
  assert len(records) == 300 and {"d_loss", "g_loss"} <= records[0].keys()
  assert sorted(map(int, os.listdir(os.path.join(workdir, "checkpoints")))) == [
      250, 275, 300]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["scheme"] == "two_optimizer_scheme:TwoOptimizer"
  # Two optimizer states, each of its own kind, in the checkpointed state.
  _, state = final_state(kind, path, workdir)
  assert set(state) == {"gen", "disc", "gen_opt", "disc_opt", "rng"}


def test_sigkill_then_resume_is_bitwise_identical(uninterrupted, tmp_path):
  kind, path, reference, _ = uninterrupted
  total = 300 if kind == "two_optimizer" else 4
  # After the first checkpoint is surely written (word2vec: one per epoch).
  kill_at = random.Random().randint(*((50, 250) if total == 300 else (2, 3)))
  workdir = tmp_path / "killed"
  proc = start_cli(path, workdir, env=env())
  wait_for_records(proc, workdir, kill_at, timeout=180, split="train")
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = start_cli(path, workdir, env=env())
  out, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, err[-3000:]
  assert "resuming at step" in out, f"killed at record {kill_at}: {out}"
  step, state = final_state(kind, path, workdir)
  ref_step, ref_state = final_state(kind, path, reference)
  assert step == ref_step == total
  assert_states_equal(state, ref_state)


def test_sigterm_saves_at_the_next_step_and_exits_zero(uninterrupted, tmp_path):
  kind, path, reference, _ = uninterrupted
  workdir = tmp_path / "preempted"
  proc = start_cli(path, workdir, env=env())
  wait_for_records(proc, workdir, 2 if kind == "word2vec" else 20,
                   timeout=180, split="train")
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert "preempted: saved a checkpoint at step" in out, out
  stopped = int(out.split("at step ")[1].split()[0])
  assert (workdir / "checkpoints" / str(stopped)).is_dir()
  assert not (workdir / "summary.json").exists()
  again = start_cli(path, workdir, env=env())
  out, err = again.communicate(timeout=300)
  assert again.returncode == 0, err[-3000:]
  assert f"resuming at step {stopped}" in out and "done:" in out
  assert_states_equal(final_state(kind, path, workdir)[1],
                      final_state(kind, path, reference)[1])


def test_a_damaged_checkpoint_is_skipped_and_the_run_ends_the_same(
    uninterrupted, tmp_path, capsys):
  """Stop early, damage the newest checkpoint (its input position and, for
  the GAN, an array file cut short), resume: the loop restores the one
  before, trains the lost steps again and ends bitwise equal."""
  kind, path, reference, _ = uninterrupted
  part = 100 if kind == "two_optimizer" else 2
  workdir = str(tmp_path / "damaged")
  train.train_and_evaluate(config_lib.from_file(
      experiment(kind, tmp_path, num_steps=part) if kind == "two_optimizer"
      else experiment(kind, tmp_path, stop_after_epochs=part)), workdir)
  newest = os.path.join(workdir, "checkpoints", str(part))
  position = os.path.join(newest, "data", "process_0-of-1.json")
  with open(position) as f:
    text = f.read()
  with open(position, "w") as f:
    f.write(text.replace(str(part), str(part + 1)))
  if kind == "two_optimizer":
    array = max(glob.glob(os.path.join(newest, "state", "**", "d", "*"),
                          recursive=True), key=os.path.getsize)
    os.truncate(array, os.path.getsize(array) // 2)
  capsys.readouterr()
  summary = train.train_and_evaluate(config_lib.from_file(path), workdir)
  err = capsys.readouterr().err
  assert f"checkpoint at step {part} is damaged: data iterator state" in err
  assert summary["resumed_from"] < part
  assert glob.glob(os.path.join(workdir, "checkpoints", f"{part}.damaged-*"))
  assert_states_equal(final_state(kind, path, workdir)[1],
                      final_state(kind, path, reference)[1])


def test_an_unknown_scheme_names_the_choices():
  config = two_optimizer_scheme.get_config()
  config.scheme = "supervized"
  with pytest.raises(ValueError, match="did you mean 'supervised'"):
    schemes.get_scheme(config)
  config.scheme = "no_such_module:Scheme"
  with pytest.raises(ValueError, match="no_such_module"):
    schemes.get_scheme(config)
