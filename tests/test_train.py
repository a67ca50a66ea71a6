"""The train loop end to end: data parallelism, resume, evaluate, the CLI."""

import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from deeplearn import (checkpoint, config as config_lib, data, evaluate, metrics,
                       step as step_lib, train)
from deeplearn.schemes import supervised

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir, **train_overrides):
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny"))
  config.data.data_dir = data_dir
  config.train.progress = False
  config.train.update(train_overrides)
  return config


def train_losses(workdir):
  records = metrics.read_records(os.path.join(workdir, "metrics.jsonl"), "train")
  return np.array([r["loss"] for r in records])


def restored_params(workdir, config):
  run = supervised.build(config)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  abstract = step_lib.abstract_state(run)
  state = ckpt.restore(ckpt.latest_step(), abstract)
  ckpt.close()
  return jax.device_get(state.params)


def test_one_device_and_eight_devices_give_the_same_losses(tfds_data_dir,
                                                           tmp_path):
  config = tiny_config(tfds_data_dir, num_steps=12, log_every=1)
  one = train.train_and_evaluate(config, str(tmp_path / "one"),
                                 devices=jax.devices()[:1])
  eight = train.train_and_evaluate(config, str(tmp_path / "eight"))
  assert one["devices"] == 1 and eight["devices"] == 8
  losses_one = train_losses(tmp_path / "one")
  assert len(losses_one) == 12
  np.testing.assert_allclose(losses_one, train_losses(tmp_path / "eight"),
                             atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(one["final"]["loss"], eight["final"]["loss"],
                             atol=1e-5, rtol=1e-5)


def test_gradient_accumulation_gives_the_same_steps(tfds_data_dir, tmp_path):
  config = tiny_config(tfds_data_dir, num_steps=6, log_every=1)
  whole = train.train_and_evaluate(config, str(tmp_path / "whole"))
  config.train.grad_accum_steps = 4  # 4 micro-batches of 8 on 8 devices
  accumulated = train.train_and_evaluate(config, str(tmp_path / "accum"))
  np.testing.assert_allclose(train_losses(tmp_path / "accum"),
                             train_losses(tmp_path / "whole"), rtol=1e-5)
  np.testing.assert_allclose(accumulated["final"]["loss"],
                             whole["final"]["loss"], rtol=1e-5)
  config.train.grad_accum_steps = 3
  with pytest.raises(ValueError, match="grad_accum_steps=3"):
    supervised.build(config)


def test_shard_map_step_form_runs_the_same_training(tfds_data_dir, tmp_path):
  config = tiny_config(tfds_data_dir, num_steps=6, log_every=1)
  train.train_and_evaluate(config, str(tmp_path / "jit"))
  config.train.step_form = "shard_map"
  train.train_and_evaluate(config, str(tmp_path / "towers"))
  np.testing.assert_allclose(train_losses(tmp_path / "towers"),
                             train_losses(tmp_path / "jit"), rtol=1e-5)


@pytest.fixture(scope="module")
def finished_run(tfds_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run") / "uninterrupted")
  config = tiny_config(tfds_data_dir)
  return workdir, config, train.train_and_evaluate(config, workdir)


def test_resume_equals_an_uninterrupted_run(finished_run, tmp_path):
  workdir, config, summary = finished_run
  assert summary["steps"] == 20 and summary["resumed_from"] == 0
  resumed = str(tmp_path / "resumed")
  first = tiny_config(config.data.data_dir, num_steps=10)  # stops at step 10
  train.train_and_evaluate(first, resumed)
  again = train.train_and_evaluate(config, resumed)
  assert again["resumed_from"] == 10
  np.testing.assert_array_equal(train_losses(resumed), train_losses(workdir))
  for a, b in zip(jax.tree.leaves(restored_params(resumed, config)),
                  jax.tree.leaves(restored_params(workdir, config))):
    np.testing.assert_array_equal(a, b)


def test_finished_run_trains_nothing_and_reports_again(finished_run):
  workdir, config, summary = finished_run
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    before = f.read()
  again = train.train_and_evaluate(config, workdir)
  assert again == json.loads(json.dumps(summary))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert f.read() == before


def test_summary_has_final_and_best_metrics(finished_run):
  workdir, _, summary = finished_run
  with open(os.path.join(workdir, "summary.json")) as f:
    stored = json.load(f)
  assert stored["final"]["step"] == 20
  assert 0.0 <= stored["final"]["accuracy"] <= 1.0
  assert stored["best"]["metric"] == "accuracy"
  assert stored["best"]["value"] >= stored["final"]["accuracy"]
  assert stored["config"]["model"]["name"] == "mnist1d_cnn"
  assert stored["num_params"] == 5210
  assert glob.glob(os.path.join(workdir, "events.out.tfevents*"))


def test_evaluate_restores_the_checkpoint(finished_run):
  workdir, _, summary = finished_run
  result = evaluate.evaluate_checkpoint(workdir)
  assert result["step"] == 20
  np.testing.assert_allclose(result["accuracy"], summary["final"]["accuracy"])
  np.testing.assert_allclose(result["loss"], summary["final"]["loss"],
                             rtol=1e-5)


def _cli(*args, cwd=ROOT):
  return subprocess.run([sys.executable, "-m", "deeplearn.train", *args],
                        cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_end_to_end_with_variant_and_override(tfds_data_dir, tmp_path):
  workdir = tmp_path / "cli"
  proc = _cli("--config", "experiments/mnist1d_cnn.py:tiny",
              f"--config.data.data_dir={tfds_data_dir}",
              "--config.optimizer.learning_rate=0.05",
              "--workdir", str(workdir))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "done: accuracy=" in proc.stdout
  assert "8 devices, mesh data=8 | 5,210 params" in proc.stdout
  with open(workdir / "config.json") as f:
    stored = json.load(f)
  assert stored["optimizer"]["learning_rate"] == 0.05
  assert stored["train"]["num_steps"] == 20  # the :tiny variant
  assert (workdir / "summary.json").exists()
  assert (workdir / "checkpoints" / "20").is_dir()
  again = _cli("--config", "experiments/mnist1d_cnn.py:tiny",
               f"--config.data.data_dir={tfds_data_dir}",
               "--config.optimizer.learning_rate=0.05",
               "--workdir", str(workdir))
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resuming at step 20" in again.stdout and "done:" in again.stdout


@pytest.mark.parametrize("override,key", [
    ("--config.optimizer.learnin_rate=0.05", "learnin_rate"),
    ("--config.train.num_steps=many", "num_steps"),
])
def test_cli_rejects_bad_keys_before_doing_anything(tmp_path, override, key):
  workdir = tmp_path / "never"
  proc = _cli("--config", "experiments/mnist1d_cnn.py", override,
              "--workdir", str(workdir))
  assert proc.returncode != 0
  assert key in proc.stderr
  assert not workdir.exists()


def test_mnist_convnet_recipe_runs_on_tfds_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "mnist_convnet.py"))
  config.data.batch_size = 16
  config.data.eval_batch_size = 32
  config.train.num_epochs = 0.0
  config.train.num_steps = 6
  config.train.update(log_every=3, eval_every=6, checkpoint_every=6,
                      progress=False)
  with tfds.testing.mock_data(num_examples=64):
    summary = train.train_and_evaluate(config, str(tmp_path / "mnist"))
  assert summary["num_params"] == 105_506
  assert summary["final"]["step"] == 6
  assert np.isfinite(summary["final"]["loss"])


def test_digits_convnet_reaches_97_percent(tfds_data_dir, tmp_path):
  # The acceptance bar of the offline vision experiment, on real digits.
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "digits_convnet.py"))
  config.data.data_dir = tfds_data_dir
  config.train.progress = False
  summary = train.train_and_evaluate(config, str(tmp_path / "digits"))
  assert summary["num_params"] == 13_706
  assert summary["final"]["accuracy"] >= 0.97


def test_language_model_task_on_tiny_shakespeare(tfds_data_dir, tmp_path):
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "shakespeare_char_ngram.py:tiny"))
  config.data.data_dir = tfds_data_dir
  config.train.progress = False
  summary = train.train_and_evaluate(config, str(tmp_path / "lm"))
  final = summary["final"]
  assert summary["best"]["metric"] == "loss"
  np.testing.assert_allclose(final["perplexity"], np.exp(final["loss"]),
                             rtol=1e-5)
  np.testing.assert_allclose(final["bits_per_token"],
                             final["loss"] / np.log(2), rtol=1e-5)
  losses = train_losses(tmp_path / "lm")
  assert losses[0] > np.log(65) - 0.5 and losses[-1] < losses[0] - 0.5


def test_model_vocab_must_match_the_dataset(tfds_data_dir, tmp_path):
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "shakespeare_char_ngram.py:tiny"))
  config.data.data_dir = tfds_data_dir
  config.model.vocab_size = 64
  with pytest.raises(ValueError, match="config.model.vocab_size=64.* 65"):
    supervised.build(config)


@pytest.mark.parametrize("averaging", ["ema", "polyak"])
def test_averaged_weights_are_used_for_evaluation_only(tfds_data_dir, tmp_path,
                                                       averaging):
  config = tiny_config(tfds_data_dir, num_steps=10, eval_every=10)
  config.optimizer.averaging = averaging
  config.optimizer.ema_decay = 0.5
  workdir = str(tmp_path / averaging)
  summary = train.train_and_evaluate(config, workdir)
  run = supervised.build(config)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  abstract = step_lib.abstract_state(run)
  state = ckpt.restore(10, abstract)
  ckpt.close()
  differ = [not np.array_equal(a, b) for a, b in
            zip(jax.tree.leaves(state.params), jax.tree.leaves(state.avg_params))]
  assert all(differ)
  eval_ds = data.eval_dataset(config.data, process_index=0,
                              process_count=1)
  on_avg = step_lib.evaluate(run, step_lib.make_eval_step(run), state, eval_ds)
  np.testing.assert_allclose(on_avg["loss"], summary["final"]["loss"],
                             rtol=1e-5)
  raw = step_lib.evaluate(run, step_lib.make_eval_step(run),
                       state.replace(avg_params=state.params), eval_ds)
  assert raw["loss"] != on_avg["loss"]
