"""Output layers for large vocabularies: full, sampled and hierarchical softmax.

Lecture concept: the output softmax over V words costs O(V d) per token and
dominates a word-level language model; two ways round it. Each layer maps a
hidden state h [..., d] to logits (or log-probabilities) [..., V] for
evaluation and sampling, and has `loss(h, targets) -> [...]` for training.

- `Softmax`: the reference, -log softmax(W h + b)[y].
- `SampledSoftmax` (Bengio & Senecal, "Adaptive importance sampling to
  accelerate training of a neural probabilistic language model", 2008; Jean
  et al., "On using very large target vocabulary for neural machine
  translation", 2015; TF's sampled_softmax_loss): K candidates c_j drawn with
  replacement from a proposal q (log-uniform / Zipf over frequency-sorted ids,
  or unigram counts), shared by every position of the batch. The true class
  enters once, uncorrected (its expected count is 1); a candidate's logit is
  corrected by -log(K q(c)), its expected count; candidates equal to the true
  class ("accidental hits") are removed. The loss is
      -s_y + log(exp(s_y) + 1/K sum_{c_j != y} exp(s_cj) / q(c_j)).
  What theory says, and the tests check:
  * UNBIASED: the importance-sampling estimate of the partition function,
    Z_hat = 1/K sum_j exp(s_cj) / q(c_j), has E[Z_hat] = Z = sum_k exp(s_k);
    so does the argument of the log above (exp(s_y) plus an unbiased
    estimate of Z - exp(s_y)).
  * ONLY CONSISTENT: the loss (a log of that estimate) and its gradients
    (self-normalised importance weights). By Jensen E[loss] <= full loss, a
    bias that shrinks monotonically as K grows and vanishes as K -> inf.
    With every class drawn once and no correction the loss IS the full one.
  TF also subtracts log Q from the true logit; that shifts the loss value by
  log(K q(y)), so it no longer tends to the full loss, and we do not.
  Evaluation uses the full softmax of the same weights (`__call__`).
- `HierarchicalSoftmax` (Morin & Bengio, "Hierarchical probabilistic neural
  network language model", 2005; Mikolov et al. 2013's Huffman tree):
  P(w | h) = prod_j sigmoid((1 - 2 code_j) (u_{point_j} . h + b_{point_j}))
  over w's path in the tree of deeplearn.language.huffman; exact and
  normalised, O(log V) per token in training; `__call__` gives the whole
  [..., V] log-probability matrix for evaluation and sampling.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deeplearn.language.huffman import huffman_tree


def _kernel_init(axes):
  return nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes)


def _bias_init(axes):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


class Softmax(nn.Module):
  """Full softmax: logits = h W + b, W [features, V] (nn.Dense's parameters)."""
  features: int
  num_classes: int

  def setup(self):
    self.kernel = self.param("kernel", _kernel_init(("embed", "vocab")),
                             (self.features, self.num_classes))
    self.bias = self.param("bias", _bias_init(("vocab",)), (self.num_classes,))

  def __call__(self, h):
    return (h @ self.kernel + self.bias).astype(jnp.float32)  # [..., V]

  def loss(self, h, targets):
    """-log P(targets | h) [...]."""
    log_p = jax.nn.log_softmax(self(h))
    return -jnp.take_along_axis(log_p, targets[..., None], -1)[..., 0]


# Proposals q over the ids: log q [V] and a sampler (rng, K) -> ids [K].
def log_uniform_log_q(num_classes: int):
  """Zipf-like q(k) = log((k + 2) / (k + 1)) / log(V + 1) (TF's
  LogUniformCandidateSampler): right when ids are sorted by frequency."""
  k = jnp.arange(num_classes, dtype=jnp.float32)
  return jnp.log(jnp.log1p(1.0 / (k + 1.0)) / jnp.log(num_classes + 1.0))


def sample_log_uniform(rng, num_samples: int, num_classes: int):
  # Inverse CDF: floor(exp(u log(V + 1))) - 1 has exactly the q above.
  u = jax.random.uniform(rng, (num_samples,))
  ids = jnp.floor(jnp.exp(u * jnp.log(num_classes + 1.0))).astype(jnp.int32) - 1
  return jnp.clip(ids, 0, num_classes - 1)


def proposal(kind: str, num_classes: int, counts=()):
  """(log_q [V], sampler(rng, K) -> ids [K]) for "log_uniform" or "unigram"."""
  if kind == "log_uniform":
    return (log_uniform_log_q(num_classes),
            functools.partial(sample_log_uniform, num_classes=num_classes))
  if kind == "unigram":
    if len(counts) != num_classes:
      raise ValueError(f"proposal 'unigram' needs counts for all {num_classes} ids,"
                       f" got {len(counts)}: set config.model.counts.")
    log_q = jax.nn.log_softmax(jnp.log(jnp.asarray(counts, jnp.float32) + 1e-30))
    return log_q, lambda rng, num_samples: jax.random.categorical(
        rng, log_q, shape=(num_samples,))
  raise ValueError(f"proposal={kind!r}: use 'log_uniform' or 'unigram'.")


def sampled_logits(h, targets, kernel, bias, candidates, log_expected_count,
                   remove_accidental_hits: bool = True):
  """[..., 1 + K] logits, the true class first (uncorrected), then the
  candidates [K] shared by all positions, minus their `log_expected_count`
  [K]; candidates equal to the target get -inf. Loss = -log_softmax[..., 0]."""
  true_logit = jnp.einsum("...d,...d->...", h, kernel.T[targets]) + bias[targets]
  logits = h @ kernel[:, candidates] + bias[candidates] - log_expected_count
  if remove_accidental_hits:
    logits = jnp.where(candidates == targets[..., None], -jnp.inf, logits)
  return jnp.concatenate([true_logit[..., None], logits], -1).astype(jnp.float32)


class SampledSoftmax(Softmax):
  """Softmax whose training loss uses `num_sampled` candidates from `proposal`
  (module docstring); `__call__` is the full softmax of the same weights.
  Draws from the "sample" rng stream."""
  num_sampled: int = 64
  proposal: str = "log_uniform"
  counts: tuple = ()  # "unigram": training counts of each id

  def loss(self, h, targets):
    log_q, sampler = proposal(self.proposal, self.num_classes, self.counts)
    candidates = sampler(self.make_rng("sample"), self.num_sampled)  # [K]
    log_count = jnp.log(float(self.num_sampled)) + log_q[candidates]
    logits = sampled_logits(h, targets, self.kernel, self.bias, candidates, log_count)
    return -jax.nn.log_softmax(logits)[..., 0]


@functools.lru_cache(maxsize=8)
def _tree(counts: tuple, num_classes: int):
  # No counts: equal ones, for which Huffman's tree is balanced (depth ~log2 V).
  return huffman_tree(np.asarray(counts) if counts else np.ones(num_classes))


class HierarchicalSoftmax(nn.Module):
  """Hierarchical softmax over the Huffman tree of `counts` (balanced when
  empty): one vector u and bias b per inner node (V - 1 of them)."""
  features: int
  num_classes: int
  counts: tuple = ()

  def setup(self):
    tree = _tree(tuple(self.counts), self.num_classes)
    self.codes = jnp.asarray(tree.codes, jnp.float32)  # [V, depth]
    self.points = jnp.asarray(tree.points)  # [V, depth]
    self.on_path = jnp.arange(tree.max_depth) < tree.lengths[:, None]  # [V, depth]
    self.kernel = self.param("kernel", _kernel_init(("vocab", "embed")),
                             (tree.num_inner, self.features))
    self.bias = self.param("bias", _bias_init(("vocab",)), (tree.num_inner,))

  def log_prob(self, h, targets):
    """Exact log P(targets | h) [...], from the target's path only."""
    points = self.points[targets]  # [..., depth]
    s = jnp.einsum("...d,...jd->...j", h, self.kernel[points]) + self.bias[points]
    signs = 1.0 - 2.0 * self.codes[targets]
    return jnp.sum(jax.nn.log_sigmoid(signs * s) * self.on_path[targets], -1)

  def loss(self, h, targets):
    return -self.log_prob(h, targets).astype(jnp.float32)

  def __call__(self, h):
    """log P(w | h) for every w [..., V]: normalised, so usable as logits."""
    s = h @ self.kernel.T + self.bias  # [..., V - 1], every inner node once
    left, right = jax.nn.log_sigmoid(s), jax.nn.log_sigmoid(-s)

    def level(j, log_p):  # one [..., V] gather per level: memory [..., V], not [..., V, depth]
      points, codes, on_path = self.points[:, j], self.codes[:, j], self.on_path[:, j]
      step = jnp.where(codes > 0, right[..., points], left[..., points])
      return log_p + jnp.where(on_path, step, 0.0)

    zeros = jnp.zeros((*h.shape[:-1], self.num_classes), jnp.float32)
    return jax.lax.fori_loop(0, self.points.shape[1], level, zeros)


OUTPUTS = {"softmax": Softmax, "sampled": SampledSoftmax,
           "hierarchical": HierarchicalSoftmax}
