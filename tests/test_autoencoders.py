"""Autoencoders and the VAE (issue 16): the bounds against a model whose likelihood
is known in closed form, the sparsity penalties and the denoising objective by
hand, bad configs failing before anything compiles, and every experiment's `:tiny`
through the command line, pictures included."""

import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal

from deeplearn import config as config_lib, images, models
from deeplearn.schemes import supervised
from deeplearn.tasks import reconstruction, vae as vae_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --- A linear-Gaussian model: z ~ N(0, I_L), x | z ~ N(W z + b, sigma^2 I_D). ---------
# p(x) = N(b, W W^T + sigma^2 I), and with W's columns orthogonal the exact posterior
# is diagonal: S = 1 / (1 + s^2 / sigma^2), m = S * W^T (x - b) / sigma^2. The VAE with
# no hidden layers and the fixed-variance Gaussian likelihood is exactly this model.
D, L, SIGMA = 4, 2, 0.5


def linear_gaussian():
  q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(D, D)))
  scales = np.array([1.5, 0.7])
  w = q[:, :L] * scales  # [D, L], orthogonal columns
  b = np.array([0.3, -0.2, 0.1, 0.5])
  post_var = 1 / (1 + scales ** 2 / SIGMA ** 2)  # [L]
  params = {
      "encoder": {"Dense_0": {
          "kernel": np.concatenate([w * post_var / SIGMA ** 2, np.zeros((D, L))], 1),
          "bias": np.concatenate([-(b @ w) * post_var / SIGMA ** 2, np.log(post_var)])}},
      "decoder": {"Dense_0": {"kernel": w.T, "bias": b}}}
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  log_px = lambda x: multivariate_normal.logpdf(  # noqa: E731
      x, b, w @ w.T + SIGMA ** 2 * np.eye(D))
  return params, w, b, post_var, log_px


def linear_vae_task(**loss):
  model = models.get_model({"name": "vae", "latent_size": L, "hidden_sizes": (),
                            "likelihood": "gaussian", "sigma": SIGMA})
  info = types.SimpleNamespace(name="toy", input_shape=(D,))
  return vae_task.VAE(model, info, loss_config=loss)


def samples(n, w, b, seed=1):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, L))
  return jnp.asarray(z @ w.T + b + SIGMA * rng.normal(size=(n, D)), jnp.float32)


def test_with_the_exact_posterior_the_elbo_and_importance_estimate_equal_log_px():
  params, w, b, _, log_px = linear_gaussian()
  task = linear_vae_task(iw_samples=20, iw_chunk=5)
  x = samples(200, w, b)
  sums = task.eval_sums(params, {}, {"inputs": x, "mask": jnp.ones(200)})
  exact = float(jnp.sum(log_px(x)))
  # log p(x, z) - log q(z | x) = log p(x) for every z: the estimate is exact at any k.
  np.testing.assert_allclose(float(sums["log_likelihood"]), exact, rtol=1e-4)
  # The ELBO (one sample, closed-form KL) equals log p(x) in expectation.
  elbos = jax.vmap(lambda key: jnp.mean(jnp.subtract(
      *task._elbo_terms(params, x, key)[:2])))(jax.random.split(jax.random.PRNGKey(0), 200))
  assert abs(float(jnp.mean(elbos)) - exact / 200) < 4 * float(jnp.std(elbos)) / np.sqrt(200)


def test_importance_estimate_rises_toward_log_px_with_k_and_is_at_least_the_elbo():
  params, w, b, post_var, log_px = linear_gaussian()
  x = samples(300, w, b, seed=2)
  mean, log_var = linear_vae_task().model.apply({"params": params}, x, method="encode")
  # Another q: the mean one posterior std off, three times the variance.
  q_mean, q_log_var = mean + jnp.sqrt(post_var), log_var + np.log(3.0)
  kl_q_post = L * 0.5 * (3.0 + 1.0 - 1.0 - np.log(3.0))  # KL(q || posterior), per x
  exact = float(jnp.mean(log_px(x)))
  elbo = exact - kl_q_post  # < log p(x) by the KL from q to the posterior
  estimates = []
  for k in (1, 10, 100, 1000):
    task = linear_vae_task(iw_samples=k, iw_chunk=min(k, 100))
    est = task.importance_log_likelihood(params, x, q_mean, q_log_var,
                                         jax.random.PRNGKey(k))
    estimates.append(float(jnp.mean(est)))
  assert abs(estimates[0] - elbo) < 0.15  # k = 1 is the single-sample ELBO
  assert all(a < b for a, b in zip(estimates, estimates[1:])), estimates
  assert all(e > elbo - 0.15 for e in estimates), (estimates, elbo)
  assert estimates[-1] <= exact + 0.02 and exact - estimates[-1] < 0.1 * kl_q_post, (
      estimates, exact)


def test_discretised_logistic_is_a_distribution_over_the_levels():
  levels = 17
  x = jnp.arange(levels, dtype=jnp.float32) / (levels - 1)  # every level
  out = jnp.stack([jnp.full(levels, 0.3), jnp.full(levels, -2.0)], -1)
  mass = jnp.exp(vae_task.log_likelihood("logistic", out, x, levels=levels))
  np.testing.assert_allclose(float(jnp.sum(mass)), 1.0, rtol=1e-5)


# --- Autoencoders ----------------------------------------------------------------------

def ae_task(code_activation="sigmoid", **loss):
  model = models.get_model({"name": "autoencoder", "code_size": 6, "hidden_sizes": (12,),
                            "code_activation": code_activation})
  info = types.SimpleNamespace(name="toy", input_shape=(4, 4, 1))
  task = reconstruction.Reconstruction(model, info, loss_config=loss)
  params = task.init_variables(jax.random.PRNGKey(0))["params"]
  x = jax.random.uniform(jax.random.PRNGKey(1), (8, 4, 4, 1))
  return task, params, x


def test_kl_sparsity_penalty_matches_the_hand_computation():
  codes = np.array([[0.1, 0.9, 0.02], [0.3, 0.5, 0.04]])
  rho, rho_hat = 0.05, codes.mean(0)
  by_hand = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
  np.testing.assert_allclose(float(reconstruction.kl_sparsity(jnp.asarray(codes), rho)),
                             by_hand, rtol=1e-5)
  assert float(reconstruction.kl_sparsity(jnp.full((4, 3), rho), rho)) < 1e-6


def test_sparse_loss_is_mse_plus_weighted_l1_and_kl_penalties():
  task, params, x = ae_task(sparsity_l1=0.01, sparsity_kl=0.2, sparsity_target=0.1)
  loss, (sums, _) = task.loss(params, {}, {"inputs": x}, jax.random.PRNGKey(2))
  recon, code = task.model.apply({"params": params}, x)
  recon, code = np.asarray(recon), np.asarray(code)
  rho_hat = code.mean(0)
  kl = np.sum(0.1 * np.log(0.1 / rho_hat) + 0.9 * np.log(0.9 / (1 - rho_hat)))
  by_hand = (np.mean((recon - np.asarray(x)) ** 2) + 0.01 * np.abs(code).sum(1).mean()
             + 0.2 * kl)
  np.testing.assert_allclose(float(loss), by_hand, rtol=1e-5)
  np.testing.assert_allclose(float(sums["kl_sparsity"] / sums["count"]), kl, rtol=1e-5)


def test_denoising_reads_the_corrupted_input_and_is_scored_on_the_clean_one():
  task, params, x = ae_task(noise="mask", noise_level=0.25)
  rng = jax.random.PRNGKey(3)
  loss, _ = task.loss(params, {}, {"inputs": x}, rng)
  noisy = reconstruction.corrupt(x, rng, "mask", 0.25)
  zeroed = float(jnp.mean(noisy == 0))
  assert 0.1 < zeroed < 0.4  # about a quarter of the values masked
  recon = task.model.apply({"params": params}, noisy)[0]
  np.testing.assert_allclose(float(loss), float(jnp.mean((recon - x) ** 2)), rtol=1e-5)
  assert abs(float(loss) - float(jnp.mean((recon - noisy) ** 2))) > 1e-4  # not the noisy one
  # Evaluation: the same noise every time, and the noisy input's own PSNR beside.
  batch = {"inputs": x, "mask": jnp.ones(8)}
  first, again = task.eval_sums(params, {}, batch), task.eval_sums(params, {}, batch)
  assert float(first["psnr"]) == float(again["psnr"]) and "psnr_input" in first


def test_grid_tiles_images_with_padding():
  tiles = np.stack([np.full((2, 3), v) for v in (0.0, 0.5, 1.0)])
  out = images.grid(tiles, cols=2, pad=1)
  assert out.dtype == np.uint8 and out.shape == (2 * 3 + 1, 2 * 4 + 1)
  assert out[1, 5] == 128 and out[4, 1] == 255 and out[4, 5] == 0  # the empty cell black
  assert images.grid(np.zeros((5, 4, 4, 3)), cols=5).shape == (6, 26, 3)


# --- Bad configs fail in supervised.build, before anything compiles, naming the key. ---

def digits_config(name, variant="tiny", **updates):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", f"{name}.py:{variant}"))
  for key, value in updates.items():
    section, field = key.split("__")
    config[section][field] = value  # every key the experiment declares
  return config


@pytest.mark.parametrize("name,updates,message", [
    ("digits_vae", {"model__likelihood": "bernouli"},
     r"config.model.likelihood='bernouli' is not a likelihood; did you mean 'bernoulli'"),
    ("digits_vae", {"data__pp_train": "", "data__pp_eval": ""},
     r"needs inputs in \[0, 1\], but config.data.pp_train='' gives values in \[0, 16\]"),
    ("digits_vae", {"model__likelihood": "bernoulli"},
     r"needs binary inputs, but config.data.pp_train='scale\(1/16\)' gives grey levels"),
    ("digits_vae", {"loss__iw_samples": 0}, r"config.loss.iw_samples=0 must be an integer >= 1"),
    ("digits_vae", {"loss__num_levels": 256}, r"config.loss.num_levels=256 grey levels"),
    ("digits_vae", {"loss__binarize": "dynamic"},
     r"config.loss.binarize='dynamic' makes binary data, for the Bernoulli likelihood"),
    ("digits_autoencoder", {"loss__sparsity_kl": 0.1},
     r"set config.model.code_activation='sigmoid', not 'identity'"),
    ("digits_autoencoder", {"loss__noise": "masking"},
     r"config.loss.noise='masking' is not a noise"),
])
def test_a_bad_config_fails_before_compiling_naming_the_key(
    name, updates, message, tfds_data_dir):
  config = digits_config(name, **updates)
  config.data.data_dir = tfds_data_dir
  with pytest.raises(ValueError, match=message):
    supervised.build(config)


def test_a_misspelled_loss_key_is_named(tfds_data_dir):
  config = digits_config("digits_autoencoder")
  config.data.data_dir = tfds_data_dir
  with config.unlocked():
    config.loss.sparsity_wieght = 0.1
  with pytest.raises(ValueError, match=r"'sparsity_wieght' is not a key of this task"):
    supervised.build(config)


# --- Every experiment's :tiny from the command line, with its pictures. ---------------

TINY = {"digits_autoencoder:tiny,denoising": ["reconstructions"],
        "digits_vae:tiny,latent2": ["samples", "reconstructions", "interpolations",
                                    "latent_map"],
        "binarized_mnist_vae:tiny": ["samples", "reconstructions", "interpolations"],
        "digits_vae:tiny,mnist1d": []}  # 1-D signals: no pictures


def workdir(spec):
  return spec.replace(":", "_").replace(",", "_")


def test_every_experiment_tiny_runs_from_the_command_line_and_writes_pictures(
    tfds_data_dir, tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  runs = {}
  for spec in TINY:  # at once: most of each run is one process's start-up
    name, variant = spec.split(":")
    runs[spec] = subprocess.Popen(
        [sys.executable, "-m", "deeplearn.train",
         f"--config={os.path.join(ROOT, 'experiments', name)}.py:{variant}",
         f"--workdir={tmp_path / workdir(spec)}", f"--config.data.data_dir={tfds_data_dir}",
         "--config.train.progress=False"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for spec, proc in runs.items():
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output[-3000:]
    step = int(digits_config(*spec.split(":")).train.num_steps)
    for picture in TINY[spec]:
      path = tmp_path / workdir(spec) / "images" / picture / f"{step:08d}.png"
      assert path.exists(), (spec, picture, output[-2000:])
