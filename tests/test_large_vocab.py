"""Specification of the large-vocabulary output layers (deeplearn/models/softmax.py):
hierarchical softmax is exact and normalised; sampled softmax's partition-function
estimate is unbiased, its loss and gradients only consistent; both train an RNNLM."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deeplearn import models
from deeplearn.models import softmax
from deeplearn.tasks.language_model import LanguageModel

V, D = 300, 12


def zipf_counts(v, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(int(c) for c in np.sort(rng.zipf(1.3, v).clip(1, 10**6))[::-1])


def random_problem(v=V, n=64, seed=0, scale=1.0):
  """Hidden states [n, D], a frequency-like kernel and bias, and targets [n]."""
  k = jax.random.split(jax.random.key(seed), 4)
  h = jax.random.normal(k[0], (n, D))
  kernel = scale * jax.random.normal(k[1], (D, v)) / np.sqrt(D)
  bias = -jnp.log1p(jnp.arange(v, dtype=jnp.float32))  # Zipf-like: low ids frequent
  targets = jax.random.categorical(k[3], h @ kernel + bias)
  return h, kernel, bias, targets


def full_loss(h, kernel, bias, targets):
  return optax.softmax_cross_entropy_with_integer_labels(h @ kernel + bias, targets)


@pytest.mark.parametrize("counts", [zipf_counts(V), ()], ids=["huffman", "balanced"])
def test_hierarchical_softmax_is_normalised_and_its_loss_is_minus_its_log_prob(counts):
  layer = softmax.HierarchicalSoftmax(D, V, counts=counts)
  h = 3.0 * jax.random.normal(jax.random.key(0), (2, 5, D))
  targets = jax.random.randint(jax.random.key(1), (2, 5), 0, V)
  variables = jax.jit(layer.init)(jax.random.key(2), h)
  variables = jax.tree.map(lambda p: p + 0.5 * jax.random.normal(  # not just the init
      jax.random.key(3), p.shape), nn.unbox(variables))
  log_p, loss, lengths = jax.jit(lambda v: layer.apply(v, method=lambda m: (
      m(h), m.loss(h, targets), m.on_path.sum(1))))(variables)
  assert log_p.shape == (2, 5, V)
  np.testing.assert_allclose(jnp.exp(log_p).sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(
      loss, -jnp.take_along_axis(log_p, targets[..., None], -1)[..., 0], atol=1e-5)
  if counts:  # frequent words get short paths: cheaper than a balanced tree on average
    assert np.average(np.asarray(lengths), weights=np.asarray(counts)) < np.log2(V) - 1
  else:  # balanced: every path has floor or ceil of log2 V nodes
    assert set(np.asarray(lengths).tolist()) <= {8, 9}  # log2 300 = 8.2


@pytest.mark.parametrize("kind", ["log_uniform", "unigram"])
def test_importance_sampling_estimate_of_the_partition_function_is_unbiased(kind):
  counts = zipf_counts(V)
  log_q, sampler = softmax.proposal(kind, V, counts)
  np.testing.assert_allclose(jnp.exp(log_q).sum(), 1.0, rtol=1e-5)
  s = 2.0 * jax.random.normal(jax.random.key(0), (V,)) - 0.5 * jnp.log1p(jnp.arange(V))
  z = jnp.exp(s).sum()
  draws, k = 4000, 16
  ids = jax.vmap(lambda r: sampler(r, k))(jax.random.split(jax.random.key(1), draws))
  z_hat = jnp.mean(jnp.exp(s[ids] - log_q[ids]), axis=1)  # [draws], one estimate each
  stderr = jnp.std(z_hat) / np.sqrt(draws)
  assert abs(float(jnp.mean(z_hat) - z)) < 4 * float(stderr), (jnp.mean(z_hat), z, stderr)
  # The sampler draws from the q the correction uses.
  freq = np.bincount(np.asarray(ids).ravel(), minlength=V) / ids.size
  assert np.abs(freq - np.exp(log_q)).max() < 0.01


def sampled_losses(h, kernel, bias, targets, k, draws, seed=1):
  """Sampled-softmax loss [draws, n] and gradient wrt the bias [draws, V]."""
  log_q, sampler = softmax.proposal("log_uniform", kernel.shape[1])

  def one(rng):
    cand = sampler(rng, k)
    fn = lambda b: -jax.nn.log_softmax(softmax.sampled_logits(  # noqa: E731
        h, targets, kernel, b, cand, jnp.log(float(k)) + log_q[cand]))[..., 0]
    return fn(bias), jax.grad(lambda b: fn(b).mean())(bias)

  return jax.jit(lambda r: jax.lax.map(one, r))(jax.random.split(jax.random.key(seed), draws))


def test_sampled_softmax_loss_is_biased_low_and_its_bias_shrinks_as_k_grows():
  h, kernel, bias, targets = random_problem(v=2000, scale=2.0)
  full = full_loss(h, kernel, bias, targets).mean()
  biases = []
  for k in (8, 64, 512):
    losses, _ = sampled_losses(h, kernel, bias, targets, k, draws=300)
    per_draw = losses.mean(1)
    stderr = float(per_draw.std()) / np.sqrt(len(per_draw))
    biases.append(float(full - per_draw.mean()))
    assert biases[-1] > -3 * stderr  # Jensen: E[sampled loss] <= full loss
  assert biases[0] > biases[1] > biases[2], biases
  assert biases[2] < 0.1 * biases[0]


def test_every_class_once_without_correction_is_exactly_the_full_softmax():
  h, kernel, bias, targets = random_problem()
  logits = softmax.sampled_logits(h, targets, kernel, bias, jnp.arange(V), jnp.zeros(V))
  np.testing.assert_allclose(-jax.nn.log_softmax(logits)[:, 0],
                             full_loss(h, kernel, bias, targets), rtol=1e-5, atol=1e-5)


def test_sampled_softmax_gradients_are_consistent():
  h, kernel, bias, targets = random_problem(v=2000, n=1, scale=2.0)
  p = jax.nn.softmax(h @ kernel + bias)[0]
  y = int(targets[0])
  full_grad = jax.grad(lambda b: full_loss(h, kernel, b, targets).mean())(bias)
  np.testing.assert_allclose(full_grad[y], p[y] - 1.0, rtol=1e-5)
  errors = []
  for k in (8, 64, 512):
    _, grads = sampled_losses(h, kernel, bias, targets, k, draws=300)
    assert jnp.all(jnp.isfinite(grads))
    errors.append(float(jnp.abs(grads.mean(0) - full_grad).sum()))  # L1 over classes
  assert errors[0] > errors[1] > errors[2], errors
  # d loss / d s_y = exp(s_y) / Z_tilde - 1 in (-1, 0): never pushes the true logit down.
  assert jnp.all(grads[:, y] < 0) and jnp.all(grads[:, y] > -1)


def lm(output, **fields):
  return models.get_model(dict(name="rnn_lm", vocab_size=40, embed_dim=8, hidden_size=16,
                               num_layers=1, output=output, **fields))


def test_sampled_rnn_lm_has_the_softmax_parameters_and_evaluates_the_full_softmax():
  x = jax.random.randint(jax.random.key(0), (2, 6), 0, 40)
  full, sampled = lm("softmax"), lm("sampled", num_sampled=8)
  variables = jax.jit(lambda r: full.init(r, x, train=False))(jax.random.key(1))
  assert (jax.tree.map(jnp.shape, jax.eval_shape(lambda r: sampled.init(r, x, train=False),
                                                 jax.random.key(1)))
          == jax.tree.map(jnp.shape, variables))  # checkpoints interchange
  np.testing.assert_allclose(jax.jit(lambda v: sampled.apply(v, x, train=False))(variables),
                             jax.jit(lambda v: full.apply(v, x, train=False))(variables),
                             rtol=1e-6)
  losses = jax.jit(lambda v: sampled.apply(v, x, train=True, targets=x, rngs={
      "sample": jax.random.key(2)}))(variables)
  assert losses.shape == (2, 6) and jnp.all(losses >= 0)


@pytest.mark.parametrize("output", ["sampled", "hierarchical"])
def test_language_model_task_trains_with_the_output_layer_and_evaluates_exactly(output):
  rng = np.random.default_rng(0)
  counts = tuple(int(c) for c in np.sort(rng.integers(1, 100, 40))[::-1])
  model = lm(output, num_sampled=10, counts=counts)
  task = LanguageModel(model, types.SimpleNamespace(input_shape=(12,)))
  seq = jnp.asarray(np.tile(np.arange(13) % 7 * 5, (8, 1)), jnp.int32)  # a repeated pattern
  batch = {"inputs": seq[:, :-1], "targets": seq[:, 1:], "mask": jnp.ones(8)}
  params = jax.jit(lambda r: nn.unbox(task.init_variables(r))["params"])(jax.random.key(0))
  tx = optax.adam(0.03)

  @jax.jit
  def step(params, opt_state, rng):
    (loss, _), grads = jax.value_and_grad(task.loss, has_aux=True)(params, {}, batch, rng)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  def eval_loss(params):
    return float(jax.jit(task.eval_sums)(params, {}, batch)["loss"] / batch["mask"].size / 12)

  before, opt_state = eval_loss(params), tx.init(params)
  for i in range(40):
    params, opt_state, loss = step(params, opt_state, jax.random.key(i))
  assert np.isfinite(float(loss))
  assert eval_loss(params) < 0.5 * before, (before, eval_loss(params))
  if output == "hierarchical":  # training and evaluation agree exactly: one model
    train_loss, _ = jax.jit(task.loss)(params, {}, batch, jax.random.key(0))
    np.testing.assert_allclose(float(train_loss), eval_loss(params), rtol=1e-4)
