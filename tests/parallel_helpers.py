"""Helpers of the parallelism tests: run a step form for a few steps from a
given state on given global batches, and compare two runs."""

import itertools

import jax
import numpy as np

from deeplearn import data
from deeplearn.parallel import data_parallel, sharding

STEPS = 5
RTOL = 1e-5
# Final states, after STEPS updates, may differ by float32 reduction order
# more than one step's metrics: up to 2.4e-5 of a leaf's scale was seen (one
# kernel entry of the model-parallel convnet, on one CPU). A wrong layout or
# a missing collective differs by orders of magnitude more.
STATE_ATOL = 1e-4


def global_batches(config):
  ds = data.train_dataset(config.data, seed=config.train.seed,
                          process_index=0, process_count=1)
  return list(itertools.islice(iter(ds), STEPS))


def initial_state(run):
  """On the host, to start every run from (each step donates its state)."""
  return jax.device_get(run.init_fn(run.config.train.seed))


def run_steps(run, step, init, batches, pmap=False):
  """Metrics and health of every step, and the final state, on the host."""
  if pmap:
    state = data_parallel.replicate_state(run, init)
  else:
    state = jax.device_put(init, run.state_shardings)
  metrics, healths = [], []
  for batch in batches:
    batch = (data_parallel.split_batch(run, batch) if pmap
             else sharding.global_batch(batch, run.batch_sharding))
    state, step_metrics, health = step(state, batch)
    metrics.append(step_metrics)
    healths.append(health)
  if pmap:
    state = data_parallel.unreplicate_state(run, state)
  metrics, healths, state = jax.device_get((metrics, healths, state))
  healths = [{k: v.item() for k, v in h.items()} for h in healths]
  return metrics, healths, state


def assert_same_run(got, want):
  """Same metrics every step (to RTOL), same health, same final state
  (params, optimizer state, batch statistics, averaged weights) to RTOL and
  STATE_ATOL of each leaf's scale."""
  (got_metrics, got_health, got_state), (metrics, health, state) = got, want
  assert got_health == health
  for a, b in zip(got_metrics, metrics, strict=True):
    assert a.keys() == b.keys()
    for key in b:
      np.testing.assert_allclose(a[key], b[key], rtol=RTOL, err_msg=key)
  assert jax.tree.structure(got_state) == jax.tree.structure(state)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got_state),
                          jax.tree.leaves(state)):
    # Relative to the leaf's scale: entries near zero have no relative digits.
    np.testing.assert_allclose(
        a, b, rtol=RTOL, atol=STATE_ATOL * np.max(np.abs(b), initial=0.0),
        err_msg=jax.tree_util.keystr(path))
