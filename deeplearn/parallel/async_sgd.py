"""Asynchronous SGD, simulated exactly: gradients that arrive k steps late.

Lecture concept: asynchronous data parallelism. Workers compute gradients on
the weights they last fetched while the parameter server keeps applying
whatever arrives, so the update uses stale gradients,
W_{t+1} = W_t - a dW_{t-k}: pipelined SGD (fixed k), Hogwild (Niu et al.
2011) and Downpour SGD (Dean et al. 2012, "Large scale distributed deep
networks"), and the analysis model of Lian et al. 2015 ("Asynchronous
parallel stochastic gradient for nonconvex optimization"): every step applies
N replicas' gradients, replica r's computed tau_{t,r} <= K steps ago.

`stale_gradients` wraps any optax optimizer: its state keeps the last K + 1
steps' gradients (K = the largest delay; K + 1 gradient copies of memory) and
hands the inner optimizer the ones from k steps ago. Nothing arrives during
the first k steps: the update is zero and the inner state stays untouched
(the server has received nothing yet). Delays are fixed, or drawn per step
and replica from a PRNG key in the state: the same seed gives the same run.
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from deeplearn.config import check_choice

# How the delays come about: "fixed" (given per replica), or drawn every step
# per replica, at most K: "uniform" on {0..K}, "geometric" P(d) ~ 2^-d (most
# gradients fresh, a tail of stragglers). config.optimizer.staleness_dist also
# takes "spread": fixed delays 0..K spread evenly over the replicas.
DISTRIBUTIONS = ("fixed", "uniform", "geometric")


class StaleState(NamedTuple):
  grads: Any  # per leaf [K + 1, replicas, ...]: the last K + 1 steps' gradients
  count: jax.Array  # updates so far
  key: jax.Array  # draws the delays
  inner: Any  # the inner optimizer's state


def _stacked_zeros(p, lead: tuple):
  """Zeros [*lead, *p.shape]; a flax-boxed leaf keeps its logical axis names
  on its own dimensions, so the buffer is sharded like the parameter."""
  if isinstance(p, nn.Partitioned):
    return nn.Partitioned(jnp.zeros(lead + p.value.shape, p.value.dtype),
                          names=(None,) * len(lead) + tuple(p.names),
                          mesh=p.mesh)
  return jnp.zeros(lead + p.shape, p.dtype)


def stale_gradients(inner: optax.GradientTransformation, staleness,
                    replicas: int | None = None, dist: str = "fixed",
                    seed: int = 0) -> optax.GradientTransformation:
  """Applies gradients k steps late: W_{t+1} = W_t - a g(W_{t-k}) for SGD.

  Args:
    inner: the optimizer that applies the gradients when they arrive.
    staleness: an int k (every replica's delay when `dist="fixed"`, else the
      largest delay drawn), or `replicas` ints: replica r's fixed delay.
    replicas: None: the gradients are shaped like the parameters, one stream.
      N: they carry a leading axis of N replicas' gradients; each is delayed
      by its own k_r, and the arrived ones are summed and divided by N.
    dist: one of DISTRIBUTIONS.
    seed: of the delays' PRNG key.
  """
  delays = np.atleast_1d(np.asarray(staleness, dtype=np.int32))
  n = replicas or 1
  if delays.ndim != 1 or delays.size not in (1, n) or delays.min() < 0:
    raise ValueError(f"staleness={staleness!r}: give one delay >= 0 or one per"
                     f" replica ({n}).")
  if dist not in DISTRIBUTIONS:
    raise ValueError(f"dist={dist!r}: use one of {list(DISTRIBUTIONS)}.")
  max_delay = int(delays.max())
  if max_delay == 0 and replicas is None:
    return inner  # synchronous SGD
  slots = max_delay + 1

  def init(params):
    return StaleState(
        grads=jax.tree.map(lambda p: _stacked_zeros(p, (slots, n)), params,
                           is_leaf=lambda x: isinstance(x, nn.Partitioned)),
        count=jnp.zeros([], jnp.int32), key=jax.random.PRNGKey(seed),
        inner=inner.init(params))

  def update(grads, state, params=None):
    if replicas is None:
      grads = jax.tree.map(lambda g: g[None], grads)
    t = state.count
    buffer = jax.tree.map(lambda b, g: b.at[t % slots].set(g), state.grads,
                          grads)
    key, draw = jax.random.split(state.key)
    if dist == "uniform":
      k = jax.random.randint(draw, (n,), 0, slots)
    elif dist == "geometric":  # jax's geometric counts trials, from 1
      k = jnp.minimum(jax.random.geometric(draw, 0.5, (n,)) - 1, max_delay)
    else:
      k = jnp.broadcast_to(jnp.asarray(delays), (n,))
    arrived = k <= t  # [n]: the gradient of step t - k exists
    slot = (t - k) % slots

    def delayed(b):  # [slots, n, ...] -> the arrived gradients' sum / n
      return jnp.tensordot(arrived.astype(b.dtype) / n, b[slot, jnp.arange(n)],
                           axes=1)

    updates, inner_state = inner.update(jax.tree.map(delayed, buffer),
                                        state.inner, params)
    # Before the first gradient arrives the weights and the inner state
    # (momentum, Adam's moments and count) stay as they were.
    any_arrived = jnp.any(arrived)
    updates = optax.tree.where(any_arrived, updates,
                               optax.tree.zeros_like(updates))
    inner_state = optax.tree.where(any_arrived, inner_state, state.inner)
    return updates, StaleState(buffer, t + 1, key, inner_state)

  return optax.GradientTransformation(init, update)


def check(config) -> None:
  """Asynchronous SGD's config checks; raises naming the key and the fix."""
  opt, train = config.optimizer, config.train
  dists = DISTRIBUTIONS[:1] + ("spread",) + DISTRIBUTIONS[1:]
  check_choice("config.optimizer.staleness_dist", opt.staleness_dist, dists)
  if opt.staleness < 0 or opt.replicas < 1:
    raise ValueError(
        f"config.optimizer.staleness={opt.staleness} must be >= 0 and"
        f" config.optimizer.replicas={opt.replicas} >= 1.")
  if opt.replicas > 1:
    per = config.data.batch_size / opt.replicas
    if per % 1 or per % train.grad_accum_steps:
      raise ValueError(
          f"config.optimizer.replicas={opt.replicas}: the batch"
          f" (config.data.batch_size={config.data.batch_size}) must cut into"
          f" {opt.replicas} equal parts, each of"
          f" grad_accum_steps={train.grad_accum_steps} micro-batches.")
    if train.step_form != "jit":
      raise ValueError(
          f"config.optimizer.replicas={opt.replicas} runs its replicas in the"
          f" jit step; set config.train.step_form='jit', not"
          f" {train.step_form!r}.")


def from_config(tx: optax.GradientTransformation, opt_cfg,
                seed: int) -> optax.GradientTransformation:
  """`tx` with config.optimizer's staleness, staleness_dist and replicas;
  `tx` itself when k = 0 and one replica (synchronous SGD)."""
  k, n, dist = opt_cfg.staleness, opt_cfg.replicas, opt_cfg.staleness_dist
  if k == 0 and n == 1:
    return tx
  staleness = k
  if dist == "spread":  # replica r is always r k / (N - 1) steps behind
    staleness = [round(r * k / max(n - 1, 1)) for r in range(n)]
    dist = "fixed"
  return stale_gradients(tx, staleness, replicas=n if n > 1 else None,
                         dist=dist, seed=seed)


def replica_grads(compute_grads, replicas: int, params, model_state, batch,
                  rng):
  """One gradient per simulated replica -> (loss, sums, model_state, grads).

  The batch [B, ...] is cut into `replicas` contiguous parts (what each
  device holds when replicas = data-parallel devices); `compute_grads`
  (step.compute_grads with its run) runs on each under vmap, from the same
  weights. grads: [replicas, ...] for `stale_gradients(replicas=N)` (the
  step's `grad_norm` is then that of all N together); loss: the mean, metric
  sums: the total, batch statistics: the replicas' mean.
  """
  split = jax.tree.map(
      lambda x: x.reshape(replicas, x.shape[0] // replicas, *x.shape[1:]),
      batch)  # [replicas, B / replicas, ...]
  loss, sums, model_states, grads = jax.vmap(
      compute_grads, in_axes=(None, None, 0, 0))(
          params, model_state, split, jax.random.split(rng, replicas))
  return (loss.mean(), jax.tree.map(lambda s: s.sum(0), sums),
          jax.tree.map(lambda s: s.mean(0), model_states), grads)
