"""The digits VAE against the best independent-per-pixel model of its likelihood family.

Issue 16's target: the held-out importance-sampled log-likelihood of `digits_vae`
at least 7 nats per example better than the best model that treats the 64 pixels
as independent, fitted to the training set by maximum likelihood, with the same
likelihood family, in under a minute of CPU. Trains each variant through the
ordinary loop (`python -m deeplearn.train`'s code path) per seed and prints both
in nats per test example, with wall and CPU time per run:

  logistic   (the default) 17 grey levels: per pixel, one discretised logistic
             (location, log scale) fitted by Adam on the training set's likelihood
  bernoulli  binarised pixels: per pixel, p = the training set's mean grey level
             (the Bernoulli maximum-likelihood fit to dynamically binarised data),
             scored on the same binarisation of the test set as the VAE's evaluation

  python benchmarks/vae_digits.py [--seeds 0,1,2] [--variants ,bernoulli]
"""

import argparse
import os
import resource
import shutil
import tempfile

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from deeplearn import config as config_lib, data, train
from deeplearn.tasks import reconstruction, vae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def split(config, name):
  """The whole split, as the task sees it (pp_eval applied): [N, 8, 8, 1]."""
  cfg = config.data.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.eval_split, cfg.eval_batch_size = name, 2000
  batches = list(data.eval_dataset(cfg, process_index=0, process_count=1))
  return np.concatenate([b["inputs"][b["mask"] > 0] for b in batches])


def per_pixel_logistic(train_x, test_x, levels):
  """Test log-likelihood of per-pixel discretised logistics fitted to train_x."""
  flat = lambda x: jnp.asarray(x.reshape(len(x), -1))  # noqa: E731
  tr, te = flat(train_x), flat(test_x)
  params = jnp.stack([tr.mean(0), jnp.log(tr.std(0) + 0.05)], -1)  # [pixels, 2]

  def nll(p, x):
    out = jnp.broadcast_to(p, x.shape + (2,))
    return -jnp.mean(jnp.sum(vae.log_likelihood("logistic", out, x, levels=levels), -1))

  opt = optax.adam(0.05)
  state = opt.init(params)

  @jax.jit
  def step(p, s):
    g = jax.grad(nll)(p, tr)
    u, s = opt.update(g, s)
    return optax.apply_updates(p, u), s

  for _ in range(3000):
    params, state = step(params, state)
  return -float(nll(params, te))


def per_pixel_bernoulli(train_x, test_x):
  """Test log-likelihood of per-pixel Bernoullis (p = mean grey level) on the test
  set binarised with the VAE evaluation's fixed key."""
  p = np.clip(train_x.mean(0), 1e-4, 1 - 1e-4)
  bin_rng = jax.random.split(jax.random.PRNGKey(reconstruction.EVAL_SEED), 3)[0]
  x = np.asarray(jax.random.bernoulli(bin_rng, jnp.asarray(test_x)), np.float64)
  return float(np.mean(np.sum(x * np.log(p) + (1 - x) * np.log(1 - p),
                              axis=tuple(range(1, x.ndim)))))


def cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None, help="Parent of the runs' workdirs.")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--variants", default=",bernoulli",
                      help="Comma-separated digits_vae variants ('' = the default).")
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  parent = args.workdir or tempfile.mkdtemp(prefix="vae_digits_")
  rows = []
  for variant in args.variants.split(","):
    spec = os.path.join(ROOT, "experiments", "digits_vae.py") + (
        f":{variant}" if variant else "")
    config = config_lib.from_file(spec)
    train_x, test_x = split(config, "train"), split(config, "test")
    if config.model.likelihood == "logistic":
      baseline = per_pixel_logistic(train_x, test_x, config.loss.num_levels)
    else:
      baseline = per_pixel_bernoulli(train_x, test_x)
    for seed in [int(s) for s in args.seeds.split(",")]:
      config.train.seed, config.train.progress = seed, False
      workdir = os.path.join(parent, f"{variant or 'default'}_seed{seed}")
      shutil.rmtree(workdir, ignore_errors=True)
      cpu = cpu_seconds()
      summary = train.train_and_evaluate(config, workdir)
      final = summary["final"]
      rows.append((variant or "(default)", config.model.likelihood, seed,
                   summary["num_params"], final["elbo"], final["log_likelihood"],
                   baseline, summary["wall_s"], cpu_seconds() - cpu))
  print("\n| variant | likelihood | seed | params | test ELBO | test log p(x), k=1000 |"
        " per-pixel model | gain (nats) | wall s | CPU s |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for variant, lik, seed, params, elbo, ll, base, wall, cpu in rows:
    print(f"| {variant} | {lik} | {seed} | {params:,} | {elbo:.2f} | {ll:.2f} |"
          f" {base:.2f} | {ll - base:+.2f} | {wall:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
  main()
