"""What are unsupervised features worth? Codes -> a linear classifier with few labels.

Issue 16's question, on the 8x8 digits: train the bottleneck, sparse and denoising
autoencoders and the VAE without labels (`digits_autoencoder`, `:sparse`,
`:denoising`, `digits_vae`; the ordinary loop, one seed), encode the training and
test sets (the VAE: its posterior mean), and fit a logistic regression on 10 or 50
labelled training examples per class; test accuracy on the 360 test digits,
mean +/- std over `--draws` draws of the labelled examples. Against the raw 64
pixels and PCA (fitted on the whole unlabelled training set) with each code's size.
Features are standardised with the training set's statistics (no labels used).

  python benchmarks/features_linear_probe.py [--draws 10] [--seed 0]
"""

import argparse
import os
import shutil
import tempfile
import time

from absl import logging
import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from deeplearn import checkpoint, config as config_lib, data, step as step_lib, train
from deeplearn.schemes import supervised

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODES = (("bottleneck AE", "digits_autoencoder", ""),
         ("sparse AE", "digits_autoencoder", "sparse"),
         ("denoising AE", "digits_autoencoder", "denoising"),
         ("VAE mean", "digits_vae", ""))
LABELS = (10, 50)


def split(config, name):
  """(inputs [N, 8, 8, 1] after pp_eval, labels [N]) of a whole split."""
  cfg = config.data.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.eval_split, cfg.eval_batch_size = name, 2000
  batches = list(data.eval_dataset(cfg, process_index=0, process_count=1))
  real = [b["mask"] > 0 for b in batches]
  return (np.concatenate([b["inputs"][r] for b, r in zip(batches, real)]),
          np.concatenate([b["label"][r] for b, r in zip(batches, real)]))


def trained_encoder(config, workdir):
  """Trains the run; -> x [N, ...] -> codes [N, code] with its final weights."""
  train.train_and_evaluate(config, workdir)
  run = supervised.build(config)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  state = ckpt.restore(ckpt.latest_step(), step_lib.abstract_state(run))
  ckpt.close()
  model = run.task.model

  def encode(x):
    out = model.apply({"params": state.params}, x, method="encode")
    return np.asarray(out[0] if isinstance(out, tuple) else out)  # the VAE: its mean

  return encode


def probe(train_f, train_y, test_f, test_y, per_class, draws):
  """Test accuracies of logistic regressions on `per_class` labels a class."""
  scaler = StandardScaler().fit(train_f)
  train_f, test_f = scaler.transform(train_f), scaler.transform(test_f)
  accuracies = []
  for draw in range(draws):
    rng = np.random.default_rng(draw)
    chosen = np.concatenate([rng.choice(np.flatnonzero(train_y == c), per_class,
                                        replace=False) for c in range(10)])
    clf = LogisticRegression(max_iter=5000).fit(train_f[chosen], train_y[chosen])
    accuracies.append(clf.score(test_f, test_y))
  return 100 * np.mean(accuracies), 100 * np.std(accuracies)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=None)
  parser.add_argument("--draws", type=int, default=10)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  parent = args.workdir or tempfile.mkdtemp(prefix="linear_probe_")
  base = config_lib.from_file(os.path.join(ROOT, "experiments", "digits_autoencoder.py"))
  (train_x, train_y), (test_x, test_y) = split(base, "train"), split(base, "test")
  flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
  rows, sizes = [], set()
  for label, name, variant in CODES:
    config = config_lib.from_file(os.path.join(ROOT, "experiments", f"{name}.py")
                                  + (f":{variant}" if variant else ""))
    config.train.seed, config.train.progress = args.seed, False
    workdir = os.path.join(parent, f"{name}_{variant or 'default'}")
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.time()
    encode = trained_encoder(config, workdir)
    train_f, test_f = encode(train_x), encode(test_x)
    sizes.add(train_f.shape[1])
    rows.append((label, train_f.shape[1], time.time() - start,
                 [probe(train_f, train_y, test_f, test_y, n, args.draws) for n in LABELS]))
  rows.append(("raw pixels", 64, 0.0, [probe(flat(train_x), train_y, flat(test_x), test_y,
                                             n, args.draws) for n in LABELS]))
  for size in sorted(sizes - {64}):
    pca = PCA(size, random_state=0).fit(flat(train_x))
    rows.append((f"PCA {size}", size, 0.0, [
        probe(pca.transform(flat(train_x)), train_y, pca.transform(flat(test_x)), test_y,
              n, args.draws) for n in LABELS]))
  print("\n| features | size | " + " | ".join(f"{n} labels/class, test %" for n in LABELS)
        + " | train wall s |")
  print("|---|---|" + "---|" * len(LABELS) + "---|")
  for label, size, wall, results in rows:
    print(f"| {label} | {size} | " + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in results)
          + f" | {wall:.0f} |")


if __name__ == "__main__":
  main()
