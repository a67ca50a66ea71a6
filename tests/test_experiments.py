"""Every experiment in experiments/: its variants are listed and build, and its `:tiny`
runs offline through the command line, as a new user would type it (mock data where a
catalog dataset is not prepared), here or in the dedicated test RUN_ELSEWHERE names. The list is read from
experiments/, so a new experiment is run too. A CPU run prints no TPU text, even with
libtpu installed, and a tiny run resumes from the command line."""

import glob
import json
import math
import os
import socket
import subprocess
import sys

import pytest

from deeplearn import config as config_lib, experiments
from deeplearn.data import tfds_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = sorted(os.path.splitext(os.path.basename(p))[0]
               for p in glob.glob(os.path.join(ROOT, "experiments", "*.py")))
# One short run for each scheme and kind of task: the smoke set.
SMOKE = {"mnist1d_cnn", "shakespeare_transformer", "dates_seq2seq_attention",
         "dates_two_tower", "wiki_word2vec_skipgram_ns", "mnist_lenet5", "digits_gan"}
# What libtpu and jax's TPU backend print when they are loaded on a machine without one.
# Experiments whose :tiny a dedicated test runs end to end and checks further (its
# pictures, decoded text, a falling loss): (file, test) there, rather than a second run
# here. The CLI itself is the same for every experiment, and is run by all the others.
_PICTURES = ("test_autoencoders.py",
             "test_every_experiment_tiny_runs_from_the_command_line_and_writes_pictures")
RUN_ELSEWHERE = {
    "binarized_mnist_vae": _PICTURES, "digits_autoencoder": _PICTURES, "digits_vae": _PICTURES,
    "cifar10_dcgan": ("test_gan.py", "test_tfds_experiments_tiny_runs_on_mock_data_and_writes_pictures"),
    "shakespeare_char_lstm": ("test_sequence_models.py",
                              "test_tiny_experiments_train_end_to_end_and_sample"),
    "wmt14_ende_seq2seq": ("test_translation_data.py",
                           "test_tiny_experiment_trains_on_mock_wmt14_and_decodes_text"),
}
TPU_TEXT = ("libtpu", "TPU_", "host bounds", "InitGoogle", "E0000", "tpu backend")


def spec(name, variant=None):
  path = os.path.join(ROOT, "experiments", f"{name}.py")
  return f"{path}:{variant}" if variant else path


def devices_needed(config) -> int:
  """Devices the mesh's fixed axes take (local SGD: 2 replicas at least)."""
  fixed = math.prod(v for v in config.mesh.to_dict().values() if v > 0)
  return max(fixed, 2 if config.train.get("step_form") == "local_sgd" else 1)


def cpu_env(devices=1):
  """The environment of a user's shell on a CPU: no platform chosen (the tests' own
  JAX_PLATFORMS=cpu removed), `devices` simulated CPU devices."""
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def train(name, workdir, data_dir, *overrides, variant="tiny", devices=1):
  result = subprocess.run(
      [sys.executable, "-m", "deeplearn.train", f"--config={spec(name, variant)}",
       f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
       "--config.train.progress=False", *overrides],
      cwd=ROOT, env=cpu_env(devices), capture_output=True, text=True, timeout=300,
      check=False)
  return result, result.stdout + result.stderr


def assert_no_tpu_text(output):
  lines = [line for line in output.splitlines() if any(t in line for t in TPU_TEXT)]
  assert not lines, "\n".join(lines)


@pytest.mark.smoke
def test_every_experiment_declares_tiny_and_its_variants_build():
  listed = experiments.all_experiments()
  assert [e.name for e in listed] == NAMES
  for e in listed:
    assert e.summary and len(e.summary) <= 100, e.name
    assert "tiny" in e.variants, e.name
    for variant in [None, *e.variants]:
      config_lib.from_file(spec(e.name, variant))
    with pytest.raises(ValueError, match=r"Unknown variant 'tinny'.*did you mean 'tiny'\?"):
      config_lib.from_file(spec(e.name, "tinny"))


@pytest.mark.smoke
def test_the_listing_names_every_experiment_and_variant():
  out = subprocess.run([sys.executable, "-m", "deeplearn.experiments"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, check=True).stdout
  for e in experiments.all_experiments():
    assert f"{e.name}: {e.summary}" in out
    for variant, what in e.variants.items():
      assert f":{variant}" in out and what in out


def test_the_tiny_runs_made_elsewhere_are_made_there():
  assert not SMOKE & set(RUN_ELSEWHERE)  # the smoke set runs here
  for name, (path, test) in RUN_ELSEWHERE.items():
    with open(os.path.join(ROOT, "tests", path)) as f:
      source = f.read()
    assert f"def {test}(" in source and f"{name}" in source, (name, path, test)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.smoke) if n in SMOKE else n
    for n in NAMES if n not in RUN_ELSEWHERE])
def test_tiny_runs_offline_from_the_command_line(name, tfds_data_dir, tmp_path):
  config = config_lib.from_file(spec(name, "tiny"))
  workdir = tmp_path / "run"
  result, output = train(name, workdir, tfds_data_dir, devices=devices_needed(config))
  assert result.returncode == 0, output[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["final"]["step"] > 0
  if config.data.get("mock_examples"):  # tfds_data_dir has no catalog dataset
    assert "random examples a split instead" in output
  assert_no_tpu_text(output)


@pytest.mark.smoke
def test_a_cpu_user_sees_no_tpu_text_and_gets_the_cpu():
  code = "import deeplearn, jax; print(jax.devices()[0].platform)"
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cpu_env(),
                          capture_output=True, text=True, timeout=120, check=True)
  assert result.stdout.split()[-1] == "cpu"
  assert_no_tpu_text(result.stdout + result.stderr)


def python(code, env):
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
  return result.stdout.split()[-1]


def test_a_platform_the_user_chose_is_kept():
  show = "import deeplearn, jax; print(jax.config.jax_platforms)"
  assert python(show, {**cpu_env(), "JAX_PLATFORMS": "tpu"}) == "tpu"
  assert python("import jax; jax.config.update('jax_platforms', 'tpu,cpu'); " + show,
                cpu_env()) == "tpu,cpu"
  assert python(show, cpu_env()) == "cpu"  # none chosen, no TPU here


@pytest.mark.smoke
def test_a_tiny_run_stopped_halfway_resumes_from_the_command_line(tfds_data_dir, tmp_path):
  workdir = tmp_path / "run"
  first, output = train("mnist1d_cnn", workdir, tfds_data_dir, "--config.train.num_steps=10")
  assert first.returncode == 0, output[-3000:]
  second, output = train("mnist1d_cnn", workdir, tfds_data_dir)
  assert second.returncode == 0, output[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["resumed_from"] == 10 and summary["final"]["step"] == 20


def test_a_catalog_dataset_missing_offline_fails_at_once_in_one_line(tmp_path):
  try:
    socket.create_connection(tfds_io.PROBE_HOST, timeout=5).close()
    pytest.skip("this machine has a network: the download would start")
  except OSError:
    pass
  # mnist is not in this empty data_dir, and :tiny's mock data is turned off.
  result, output = train("mnist_lenet5", tmp_path / "run", tmp_path / "tfds",
                         "--config.data.mock_examples=0")
  assert result.returncode != 0
  assert "config.data.dataset='mnist' is not prepared in" in output
  assert "no network" in output and "--config.data.data_dir=DIR" in output
  assert "Retrying" not in output
