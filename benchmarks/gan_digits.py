"""The digits GAN against a VAE and a per-class Gaussian, judged by deeplearn's own classifier.

Trains experiments/digits_convnet.py (the judge), then experiments/digits_gan.py
for each seed through the ordinary loop with config.gan.classifier_workdir set,
experiments/digits_vae.py for each seed (its samples: z ~ N(0, I) through the
decoder's mean, `VAE.prior_samples`, mapped from [0, 1] to the GAN's [-1, 1]),
and samples a baseline: one full-covariance Gaussian per digit fitted to the
training images (shrunk toward the diagonal), classes drawn at their training
frequencies. Each row: the classifier's Fréchet distance to the test images'
features (a relative measure on this classifier, not the published FID), the
entropy of the predicted-label histogram (log 10 = 2.30 is uniform), the mean
max-probability, the rarest predicted digit's share (mode collapse), and the
mean distance of each sample to its nearest training image (test images' own
for reference: much smaller for samples would mean memorisation).

The issue's targets: FD below the VAE's and the baseline's, entropy >= 2.2 nats, mean
max-probability >= 0.9, every digit generated.

  python benchmarks/gan_digits.py [--seeds 0,1,2] [--workdir DIR] [--variant dcgan]
"""

import argparse
import os
import shutil
import tempfile
import time

from absl import logging
import jax
import numpy as np

from deeplearn import (checkpoint, config as config_lib, data, generative_metrics as gm, schemes,
                       train)
from deeplearn.schemes import supervised

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = 1000


def experiment(name, variant=""):
  return config_lib.from_file(os.path.join(ROOT, "experiments", f"{name}.py")
                              + (f":{variant}" if variant else ""))


def gaussian_baseline(images, labels, n, seed, shrink=0.1):
  """n samples [n, ...] of per-class Gaussians fitted to images [m, ...]."""
  rng = np.random.default_rng(seed)
  flat = images.reshape(len(images), -1).astype(np.float64)
  classes, counts = np.unique(labels, return_counts=True)
  drawn = rng.choice(classes, size=n, p=counts / counts.sum())
  out = np.empty((n, flat.shape[1]))
  for c in classes:
    x = flat[labels == c]
    cov = np.cov(x, rowvar=False)
    cov = (1 - shrink) * cov + shrink * np.diag(np.diag(cov)) + 1e-4 * np.eye(len(cov))
    out[drawn == c] = rng.multivariate_normal(x.mean(0), cov, size=int((drawn == c).sum()))
  return np.clip(out, -1, 1).reshape(n, *images.shape[1:]).astype(np.float32)


def vae_samples(seed, parent, shape):
  """Trains digits_vae with `seed`; SAMPLES of its samples in the GAN's scale."""
  config = experiment("digits_vae")
  config.train.seed = seed
  config.train.progress = False
  workdir = os.path.join(parent, f"vae_seed{seed}")
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.time()
  summary = train.train_and_evaluate(config, workdir)
  seconds = time.time() - start
  vae = supervised.load_finished(workdir)
  x = vae.run.task.prior_samples(vae.params, SAMPLES, jax.random.PRNGKey(seed))
  print(f"vae seed {seed}: {summary['wall_s']:.1f} s of training, test log p(x)"
        f" {summary['final']['log_likelihood']:.2f}", flush=True)
  return 2 * np.asarray(x).reshape(SAMPLES, *shape) - 1, seconds  # 0..16 / 16 -> / 8 - 1


def row(name, samples, classifier, train_images, seconds=None):
  feats, probs = classifier.features(samples)
  predicted = probs.argmax(1)
  share = np.bincount(predicted, minlength=classifier.num_classes) / len(predicted)
  return {"name": name,
          "fd": gm.frechet_gaussians(*gm.gaussian_fit(feats), *classifier.real_stats),
          "entropy": gm.label_entropy(predicted, classifier.num_classes),
          "max_prob": gm.mean_max_prob(probs), "rarest": share.min(),
          "nn": gm.nearest_neighbour_distances(samples, train_images).mean(),
          "wall_s": seconds}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None, help="Parent of the runs (default: temp).")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--variant", default="", help="digits_gan variant, e.g. dcgan.")
  parser.add_argument("--steps", type=int, default=0, help="GAN steps (0: the experiment's).")
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  parent = args.workdir or tempfile.mkdtemp(prefix="gan_digits_")
  judge = os.path.join(parent, "classifier")
  config = experiment("digits_convnet")
  config.train.progress = False
  if not os.path.exists(os.path.join(judge, "summary.json")):
    shutil.rmtree(judge, ignore_errors=True)
  accuracy = train.train_and_evaluate(config, judge)["final"]["accuracy"]

  rows, scheme = [], None
  for seed in [int(s) for s in args.seeds.split(",")]:
    config = experiment("digits_gan", args.variant)
    config.train.seed = seed
    config.train.progress = False
    config.gan.classifier_workdir = judge
    config.gan.eval_samples = SAMPLES
    if args.steps:
      config.train.num_steps = args.steps
    workdir = os.path.join(parent, f"gan_seed{seed}")
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.time()
    summary = train.train_and_evaluate(config, workdir)
    seconds = time.time() - start
    scheme = schemes.get_scheme(config)
    if scheme.classifier is None:
      raise RuntimeError("no classifier")
    final = summary["final"]
    print(f"seed {seed}: {summary['wall_s']:.1f} s of training, fd {final['fd']:.3f},"
          f" entropy {final['label_entropy']:.3f}, max-prob {final['mean_max_prob']:.3f}",
          flush=True)
    ckpt = checkpoint.Checkpointer(workdir, read_only=True)
    state, _ = ckpt.restore_latest(scheme.abstract_state())
    ckpt.close()
    rows.append((scheme, state, seed, seconds))

  scheme = rows[0][0]
  train_split = scheme.config.data.train_split
  n_train = scheme.info.num_examples[train_split]
  train_images = scheme._eval_images(n_train, split=train_split)  # pylint: disable=protected-access
  labels = np.concatenate([b["label"][b["mask"] > 0] for b in data.eval_dataset(
      scheme.config.data, split=train_split, process_index=0, process_count=1)])
  clf = scheme.classifier
  # References: the test images themselves (FD 0 by construction; their NN
  # distance is the one to compare samples with) and training images (FD floor).
  table = [row("test images (reference)", scheme._real, clf, train_images),  # pylint: disable=protected-access
           row(f"training images, first {SAMPLES}", train_images[:SAMPLES], clf,
               train_images)]
  for seed in [int(s) for s in args.seeds.split(",")]:
    table.append(row(f"per-class Gaussian, seed {seed}",
                     gaussian_baseline(train_images, labels, SAMPLES, seed), clf,
                     train_images))
  for seed in [int(s) for s in args.seeds.split(",")]:
    samples, seconds = vae_samples(seed, parent, train_images.shape[1:])
    table.append(row(f"VAE (digits_vae), seed {seed}", samples, clf, train_images, seconds))
  for sch, state, seed, seconds in rows:
    table.append(row(f"GAN {args.variant or 'mlp'}, seed {seed}",
                     sch.samples(state)["eval"], clf, train_images, seconds))
  print(f"\nclassifier: digits_convnet, test accuracy {accuracy:.4f};"
        f" {jax.devices()[0].platform}, {SAMPLES} samples each")
  print("| samples | FD | label entropy | mean max-prob | rarest digit | NN dist | wall s |")
  print("|---|---|---|---|---|---|---|")
  for r in table:
    wall = f"{r['wall_s']:.0f}" if r["wall_s"] else "-"
    print(f"| {r['name']} | {r['fd']:.3f} | {r['entropy']:.3f} | {r['max_prob']:.3f} |"
          f" {r['rarest']:.3f} | {r['nn']:.3f} | {wall} |")


if __name__ == "__main__":
  main()
