"""Sample-quality measures of generative models, as pure numpy functions.

A classifier trained on the real data judges the samples (Salimans et al.,
"Improved Techniques for Training GANs", 2016; Heusel et al., "GANs Trained by
a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", 2017):

  frechet_distance      between Gaussians fitted to the classifier's features
                        of samples and of real images (FID's formula, but on
                        deeplearn's own digits / MNIST classifier, not
                        Inception: a relative measure, not the published FID)
  mean_max_prob         how sure the classifier is of each sample's class
  label_entropy         entropy (nats) of the histogram of predicted labels:
                        log 10 = 2.30 when all ten digits are equally common,
                        lower when the generator drops modes
  nearest_neighbour_distances  each sample's distance to its nearest training
                        image: the memorisation check

Nothing here imports deeplearn: the GAN scheme and benchmarks feed it arrays.
"""

import numpy as np


def gaussian_fit(feats) -> tuple[np.ndarray, np.ndarray]:
  """Mean [d] and covariance [d, d] (float64) of features [n, d]."""
  feats = np.asarray(feats, np.float64)
  return feats.mean(0), np.cov(feats, rowvar=False).reshape(
      feats.shape[1], feats.shape[1])


def frechet_gaussians(mu_a, cov_a, mu_b, cov_b) -> float:
  """|mu_a - mu_b|^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2)): the squared
  2-Wasserstein distance between two Gaussians.

  tr (cov_a cov_b)^(1/2) is the sum of the square roots of the eigenvalues of
  cov_a^(1/2) cov_b cov_a^(1/2), which is symmetric positive semi-definite:
  computed so, it has none of sqrtm's complex round-off.
  """
  vals, vecs = np.linalg.eigh(cov_a)
  root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
  middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
  trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
  diff = np.asarray(mu_a) - np.asarray(mu_b)
  # >= 0 in exact arithmetic; round-off leaves -1e-12 for identical sets.
  return max(0.0, float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root))


def frechet_distance(feats_a, feats_b) -> float:
  """The Fréchet distance between Gaussians fitted to features [n, d] and
  [m, d]; 0 for identical sets."""
  return frechet_gaussians(*gaussian_fit(feats_a), *gaussian_fit(feats_b))


def mean_max_prob(probs) -> float:
  """The mean over samples of the largest class probability; probs [n, k]."""
  return float(np.mean(np.max(probs, axis=1)))


def label_entropy(labels, num_classes: int) -> float:
  """Entropy in nats of the histogram of predicted labels [n] (int)."""
  counts = np.bincount(np.asarray(labels), minlength=num_classes)
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())


def nearest_neighbour_distances(samples, train, chunk: int = 256) -> np.ndarray:
  """Euclidean distance [n] from each of samples [n, ...] to the nearest of
  train [m, ...] (same shapes after the first axis). float32, `chunk`
  samples at a time: MNIST's 60,000 training images take [256, 60000] at once."""
  a = np.asarray(samples, np.float32).reshape(len(samples), -1)
  b = np.asarray(train, np.float32).reshape(len(train), -1)
  b2 = (b * b).sum(1)
  out = []
  for start in range(0, len(a), chunk):
    x = a[start:start + chunk]
    d2 = (x * x).sum(1)[:, None] - 2 * x @ b.T + b2[None, :]
    out.append(np.sqrt(np.clip(d2.min(1), 0, None)))
  return np.concatenate(out) if out else np.zeros((0,), np.float32)
