"""The GAN scheme (deeplearn/schemes/gan.py) and its sample-quality measures
(deeplearn/generative_metrics.py): each half of the step changes only its own
network; a SIGKILLed run resumes bitwise; 8 devices step as 1; the experiments'
`:tiny` runs write their pictures; bad settings fail before anything compiles,
naming the key; the measures match hand-computed cases."""

import glob
import json
import math
import os
import random
import signal

import jax
import numpy as np
import pytest
import scipy.linalg

from deeplearn import checkpoint, config as config_lib, generative_metrics as gm
from deeplearn import schemes, train

from run_helpers import start_cli, wait_for_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_GAN = os.path.join(ROOT, "experiments", "digits_gan.py")


def digits_config(data_dir, variant="tiny", **gan):
  config = config_lib.from_file(f"{DIGITS_GAN}:{variant}")
  with config.unlocked():
    config.data.data_dir = data_dir
    config.train.progress = False
    config.gan.update(gan)
  return config


def leaves_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# --- the measures -----------------------------------------------------------------------


def test_frechet_distance_of_a_set_with_itself_is_zero():
  feats = np.random.default_rng(0).normal(size=(500, 6)) @ np.diag([1, 2, 3, 0.5, 1, 4])
  assert gm.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_two_gaussians_matches_the_closed_form():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
  cov_a, cov_b = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
  mu_a, mu_b = rng.normal(size=4), rng.normal(size=4)
  # Heusel et al.'s formula with scipy's matrix square root.
  want = (np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b)
          - 2 * np.trace(scipy.linalg.sqrtm(cov_a @ cov_b).real))
  assert gm.frechet_gaussians(mu_a, cov_a, mu_b, cov_b) == pytest.approx(want, rel=1e-8)
  # Diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2.
  got = gm.frechet_gaussians(np.zeros(2), np.diag([4.0, 9.0]), np.ones(2),
                             np.diag([1.0, 1.0]))
  assert got == pytest.approx(2 + (2 - 1) ** 2 + (3 - 1) ** 2)


def test_label_entropy_max_prob_and_nearest_neighbours_by_hand():
  assert gm.label_entropy(np.arange(1000) % 10, 10) == pytest.approx(math.log(10))
  assert gm.label_entropy(np.full(50, 3), 10) == 0.0  # one mode: total collapse
  assert gm.label_entropy(np.array([0, 0, 1, 1]), 10) == pytest.approx(math.log(2))
  probs = np.array([[0.9, 0.1], [0.3, 0.7]])
  assert gm.mean_max_prob(probs) == pytest.approx(0.8)
  train_set = np.array([[0.0, 0.0], [3.0, 4.0]])
  samples = np.array([[0.0, 1.0], [3.0, 4.0], [6.0, 8.0]])
  np.testing.assert_allclose(
      gm.nearest_neighbour_distances(samples, train_set, chunk=2), [1.0, 0.0, 5.0])


# --- bad settings fail before anything compiles ------------------------------------------


@pytest.mark.parametrize("change, message", [
    (dict(gan={"d_steps": 0}), r"config\.gan\.d_steps=0 must be >= 1"),
    (dict(gan={"d_step": 2}), r"config\.gan\.d_step is not a GAN setting; did you mean 'd_steps'"),
    (dict(gan={"loss": "hinj"}), r"config\.gan\.loss='hinj'.*did you mean 'hinge'"),
    (dict(gan={"d_steps": 3}), r"config\.gan\.d_steps=3: the batch"),
    (dict(gan={"eval_samples": 0}), r"config\.gan\.eval_samples=0 must be >= 1"),
    (dict(generator={"image_shape": (28, 28, 1)}),
     r"config\.model\.generator makes images of shape \(28, 28, 1\)"),
    (dict(generator={"hidden_sizes": (0,)}),
     r"config\.model\.generator\.hidden_sizes=\(0,\) must be >= 1"),
    (dict(data={"pp_train": "", "pp_eval": ""}), r"config\.data\.pp_train.*\[0, 16\]"),
])
def test_a_bad_setting_fails_before_compiling_naming_the_key(
    change, message, tfds_data_dir, monkeypatch):
  config = digits_config(tfds_data_dir)
  with config.unlocked():
    config.gan.update(change.get("gan", {}))
    config.model.generator.update(change.get("generator", {}))
    config.data.update(change.get("data", {}))
  compiled = []
  monkeypatch.setattr(jax.stages.Lowered, "compile",
                      lambda *a, **k: compiled.append(a))
  with pytest.raises(ValueError, match=message):
    schemes.get_scheme(config)
  assert not compiled


# --- the step ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gan(tfds_data_dir):
  """digits_gan:tiny with batch norm in G (quicker to compile than a DCGAN on
  these CPUs) and 2 D steps a G step, on 1 device and on 8. SGD: Adam's first
  step is lr * sign(g), which turns a round-off difference in a near-zero
  gradient into a whole step."""
  config = digits_config(tfds_data_dir, d_steps=2)
  with config.unlocked():
    config.model.generator.batch_norm = True
    config.optimizer.update(name="sgd", learning_rate=0.05)
  one = schemes.get_scheme(config, jax.devices()[:1])
  eight = schemes.get_scheme(config, jax.devices())
  assert eight.mesh.size == 8
  batch = next(one.inputs())
  return one, eight, batch


def test_each_half_of_the_step_changes_only_its_own_network(gan):
  scheme, _, batch = gan
  state = scheme.init_state()
  key = jax.random.key(3)
  after_d, *_ = jax.jit(scheme.disc_update)(state, batch["inputs"][:16], key)
  # The discriminator's update: G's params, statistics and optimizer untouched.
  assert leaves_equal((after_d.gen, after_d.gen_state, after_d.gen_opt),
                      (state.gen, state.gen_state, state.gen_opt))
  assert not leaves_equal(after_d.disc, state.disc)
  after_g, *_ = jax.jit(scheme.gen_update)(state, key)
  # The generator's update: D's params, statistics and optimizer untouched.
  assert leaves_equal((after_g.disc, after_g.disc_state, after_g.disc_opt),
                      (state.disc, state.disc_state, state.disc_opt))
  assert not leaves_equal(after_g.gen, state.gen)
  assert not leaves_equal(after_g.gen_state, state.gen_state)


def test_eight_devices_step_as_one(gan):
  one, eight, batch = gan
  got = {}
  for name, scheme in (("one", one), ("eight", eight)):
    state, metrics, health = scheme.train_step(scheme.init_state(),
                                               scheme.next_input(iter([batch])))
    got[name] = jax.device_get((state, metrics, health))
  assert got["one"][2]["finite"] and int(got["one"][0].step) == 1
  for a, b in zip(jax.tree.leaves(got["one"]), jax.tree.leaves(got["eight"]), strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


# --- runs ---------------------------------------------------------------------------------


def final_state(config, workdir):
  scheme = schemes.get_scheme(config)
  ckpt = checkpoint.Checkpointer(str(workdir), read_only=True)
  state, step = ckpt.restore_latest(scheme.abstract_state())
  ckpt.close()
  return step, jax.device_get(state)


def test_sigkill_then_resume_is_bitwise_identical(tfds_data_dir, tmp_path):
  settings = dict(num_steps=40, log_every=1, eval_every=40, checkpoint_every=8,
                  progress=False, compilation_cache_dir=str(tmp_path / "cache"))
  path = tmp_path / "gan_experiment.py"
  path.write_text(f"""
from deeplearn.config import from_file

def get_config(arg=None):
  config = from_file({DIGITS_GAN + ':tiny'!r})
  config.unlock()
  config.data.data_dir = {tfds_data_dir!r}
  config.train.update({settings!r})
  return config
""")
  config = config_lib.from_file(str(path))
  reference = tmp_path / "reference"
  with config.unlocked():  # in this process: no cache directory set for later tests
    config.train.compilation_cache_dir = ""
  train.train_and_evaluate(config, str(reference))
  # The child processes share a compilation cache: the resumed one loads the step.
  env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_COMPILATION_CACHE"}
  kill_at = random.Random().randint(10, 30)  # after the first checkpoint (step 8)
  workdir = tmp_path / "killed"
  proc = start_cli(str(path), workdir, env=env)
  wait_for_records(proc, workdir, kill_at, timeout=180, split="train")
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = start_cli(str(path), workdir, env=env)
  out, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, err[-3000:]
  assert "resuming at step" in out, f"killed at record {kill_at}: {out}"
  step, state = final_state(config, workdir)
  ref_step, ref_state = final_state(config, reference)
  assert step == ref_step == 40
  assert set(vars(state)) >= {"gen", "disc", "gen_opt", "disc_opt", "rng"}
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref_state), strict=True):
    np.testing.assert_array_equal(a, b)


def assert_pictures(workdir, step):
  for name in ("samples", "interpolation"):
    assert os.path.exists(os.path.join(workdir, "images", name, f"{step:08d}.png")), name


def test_digits_gan_tiny_with_a_trained_classifier_reports_its_measures(
    tfds_data_dir, tmp_path):
  """digits_convnet:tiny is the classifier; digits_gan:tiny, from the command
  line, reports its Fréchet distance, label entropy and max-probability, the
  memorisation distances, and writes its pictures."""
  classifier = config_lib.from_file(os.path.join(ROOT, "experiments",
                                                 "digits_convnet.py:tiny"))
  with classifier.unlocked():
    classifier.data.data_dir = tfds_data_dir
    classifier.train.progress = False
  train.train_and_evaluate(classifier, str(tmp_path / "classifier"))
  workdir = tmp_path / "gan"
  proc = start_cli(f"{DIGITS_GAN}:tiny", workdir,
                   f"--config.data.data_dir={tfds_data_dir}",
                   f"--config.gan.classifier_workdir={tmp_path / 'classifier'}",
                   "--config.train.progress=False")
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  final = summary["final"]
  assert summary["best"]["metric"] == "fd" and final["fd"] > 0
  assert 0 <= final["label_entropy"] <= math.log(10) + 1e-9
  assert 0.1 <= final["mean_max_prob"] <= 1
  assert 0 <= final["d_real"] <= 1 and 0 <= final["d_fake"] <= 1
  assert summary["nn_train_distance_samples"] > 0
  assert summary["num_params_generator"] == 90_688
  assert_pictures(workdir, 6)


# cifar10_dcgan's :tiny on 8 devices, its one run (tests/test_experiments.py runs
# mnist_dcgan's through the CLI).
@pytest.mark.parametrize("name", ["cifar10_dcgan"])
def test_tfds_experiments_tiny_runs_on_mock_data_and_writes_pictures(name, tmp_path):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", f"{name}.py:tiny"))
  with config.unlocked():
    config.data.data_dir = str(tmp_path / "tfds")  # nothing prepared: mock data
    config.train.progress = False
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["final"]["step"] == 4
  assert all(math.isfinite(v) for v in summary["final"].values())
  assert_pictures(str(tmp_path / "run"), 4)
  assert glob.glob(str(tmp_path / "run" / "checkpoints" / "4"))
