"""Asynchronous and local SGD are the lectures' recursions, exactly.

Stale gradients: W_{t+1} = W_t - a g(W_{t-k}), per replica with its own
k_r, checked against hand-written loops on least squares. Local SGD: H = 1
is synchronous SGD; with H > 1 the replicas part between syncs and meet at
each; DiLoCo's outer Nesterov step; the compiled step all-reduces the
parameters only in its sync branch: bytes per step drop by H.
"""

import os

import jax
import ml_collections
import numpy as np
import optax
import pytest

from deeplearn import checkpoint, config as config_lib, step as step_lib, train
from deeplearn.hlo import parse_collectives
from deeplearn.schemes import supervised
from deeplearn.parallel import async_sgd, data_parallel, local_sgd, sharding
from parallel_helpers import global_batches, initial_state, run_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR = 0.05
STEPS = 12


# -- stale gradients on least squares: 4 replicas, a new batch every step ---

def problem(seed=0, replicas=4, dim=5, rows=8):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(STEPS, replicas, rows, dim))
  y = rng.normal(size=(STEPS, replicas, rows))
  return x, y, rng.normal(size=dim)


def grad(w, x, y):  # of mean 0.5 (x w - y)^2, over the last two axes' rows
  return np.einsum("...ri,...r->...i", x, x @ w - y) / x.shape[-2]


def run_wrapper(tx, x, y, w0, per_replica):
  """W_t for t = 0..STEPS through the optax wrapper, in float32."""
  w = jax.numpy.asarray(w0, np.float32)
  state, ws = tx.init(w), [np.asarray(w)]
  for t in range(STEPS):
    g = grad(np.asarray(w, np.float64), x[t], y[t])  # [replicas, dim]
    g = g if per_replica else g.mean(0)
    updates, state = tx.update(g.astype(np.float32), state, w)
    w = optax.apply_updates(w, updates)
    ws.append(np.asarray(w))
  return np.array(ws)


def run_by_hand(x, y, w0, delays):
  """W_{t+1} = W_t - a mean_r g_r(W_{t-k_r}); a gradient not yet computed
  (t - k_r < 0) contributes nothing."""
  ws = [w0]
  for t in range(STEPS):
    step = sum(grad(ws[t - k], x[t - k, r], y[t - k, r])
               for r, k in enumerate(delays) if t >= k)
    ws.append(ws[t] - LR * step / len(delays))
  return np.array(ws)


def test_zero_staleness_is_synchronous_sgd():
  x, y, w0 = problem()
  sync = run_by_hand(x, y, w0, [0] * 4)
  np.testing.assert_allclose(
      run_wrapper(async_sgd.stale_gradients(optax.sgd(LR), 0), x, y, w0,
                  per_replica=False), sync, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(  # 4 replicas, no delay: their mean, every step
      run_wrapper(async_sgd.stale_gradients(optax.sgd(LR), 0, replicas=4),
                  x, y, w0, per_replica=True), sync, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_fixed_staleness_follows_the_delayed_recursion(k):
  x, y, w0 = problem()
  want = run_by_hand(x, y, w0, [k] * 4)
  got = run_wrapper(async_sgd.stale_gradients(optax.sgd(LR), k), x, y, w0,
                    per_replica=False)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(got[:k + 1] == w0.astype(np.float32))  # nothing arrived yet
  assert not np.allclose(got, run_by_hand(x, y, w0, [0] * 4), atol=1e-3)
  # Equal delays per replica reduce to the fixed case.
  per_replica = run_wrapper(
      async_sgd.stale_gradients(optax.sgd(LR), [k] * 4, replicas=4), x, y,
      w0, per_replica=True)
  np.testing.assert_allclose(per_replica, got, rtol=1e-5, atol=1e-6)


def test_each_replica_is_delayed_by_its_own_staleness():
  x, y, w0 = problem()
  delays = [0, 1, 3, 2]  # replica 2 is the straggler
  got = run_wrapper(async_sgd.stale_gradients(optax.sgd(LR), delays,
                                              replicas=4),
                    x, y, w0, per_replica=True)
  np.testing.assert_allclose(got, run_by_hand(x, y, w0, delays), rtol=1e-5,
                             atol=1e-6)


def test_inner_state_waits_for_the_first_gradient():
  """Adam's count and moments start when the first delayed gradient does."""
  x, y, w0 = problem()
  k = 3
  tx = async_sgd.stale_gradients(optax.adam(LR), k)
  w = w0.astype(np.float32)
  state = tx.init(w)
  for t in range(k + 1):
    updates, state = tx.update(grad(w0, x[t], y[t]).mean(0).astype(np.float32),
                               state, w)
    arrived = t >= k
    assert np.any(updates != 0) == arrived
    assert int(state.inner[0].count) == int(arrived)


def test_drawn_delays_are_deterministic_and_bounded():
  x, y, w0 = problem()

  def run(dist, seed, k=4):
    return run_wrapper(async_sgd.stale_gradients(
        optax.sgd(LR), k, replicas=4, dist=dist, seed=seed), x, y, w0,
                       per_replica=True)

  for dist in ("uniform", "geometric"):
    first = run(dist, seed=1)
    np.testing.assert_array_equal(run(dist, seed=1), first)  # bitwise
    assert not np.allclose(run(dist, seed=2), first)
  # At most 0 steps late: the synchronous run.
  np.testing.assert_allclose(run("uniform", seed=1, k=0),
                             run_by_hand(x, y, w0, [0] * 4), rtol=1e-5,
                             atol=1e-6)


# -- the train loop's steps: MNIST-1D, a linear model, 8 devices -------------

def tiny_config(data_dir, **overrides):
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny"))
  config.data.data_dir = data_dir
  config.unlock()
  config.model = ml_collections.ConfigDict({"name": "linear",
                                            "num_classes": 10})
  config.lock()
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.1
  for key, value in overrides.items():
    section, name = key.split("__")
    config[section][name] = value
  return config


@pytest.fixture(scope="module")
def sync(tfds_data_dir):
  """Synchronous SGD on 8 devices: the run local SGD with H = 1 must equal."""
  config = tiny_config(tfds_data_dir)
  run = supervised.build(config)
  init, batches = initial_state(run), global_batches(config)
  return init, batches, run_steps(run, step_lib.make_train_step(run), init,
                                  batches)


def test_async_replicas_in_the_train_step(sync, tfds_data_dir):
  """4 replicas with no delay are synchronous SGD; with delays, the same
  seed gives the same run bit for bit."""
  init, batches, (metrics, _, state) = sync
  run = supervised.build(tiny_config(tfds_data_dir, optimizer__replicas=4))
  fresh = run_steps(run, step_lib.make_train_step(run), initial_state(run),
                    batches)
  np.testing.assert_allclose([m["loss"] for m in fresh[0]],
                             [m["loss"] for m in metrics], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(fresh[2].params),
                  jax.tree.leaves(state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  run = supervised.build(tiny_config(
      tfds_data_dir, optimizer__replicas=4, optimizer__staleness=2,
      optimizer__staleness_dist="uniform"))
  step = step_lib.make_train_step(run)
  init = initial_state(run)
  one, two = (run_steps(run, step, init, batches)[2] for _ in range(2))
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(one.params["Dense_0"]["kernel"],
                         state.params["Dense_0"]["kernel"], atol=1e-4)


def local_run(data_dir, h, outer="average"):
  run = supervised.build(tiny_config(data_dir, train__step_form="local_sgd",
                                train__local_steps=h,
                                train__outer_optimizer=outer))
  return run, data_parallel.make_local_sgd_train_step(run)


def test_local_sgd_with_one_local_step_is_synchronous_sgd(sync,
                                                          tfds_data_dir):
  init, batches, (metrics, _, state) = sync
  run, step = local_run(tfds_data_dir, 1)
  start = initial_state(run)
  for a, b in zip(jax.tree.leaves(start.params), jax.tree.leaves(init.params)):
    np.testing.assert_array_equal(a, b)  # the same start
  got_metrics, _, got = run_steps(run, step, start, batches)
  np.testing.assert_allclose([m["loss"] for m in got_metrics],
                             [m["loss"] for m in metrics], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_local_replicas_part_between_syncs_and_meet_at_each(tfds_data_dir):
  """H = 2: after step 1 the 8 replicas differ and the global weights have
  not moved; after step 2 all equal the global weights. DiLoCo's global
  weights after a sync: w0 - 0.7 (1 + 0.9) (w0 - replicas' average)."""
  batches = global_batches(tiny_config(tfds_data_dir))[:2]
  run, step = local_run(tfds_data_dir, 2)
  init = initial_state(run)
  kernel = lambda s: np.asarray(s.params["Dense_0"]["kernel"])
  replicas = lambda s: np.asarray(s.opt_state.params["Dense_0"]["kernel"])
  state = jax.device_put(init, run.state_shardings)
  state, _, _ = step(state, sharding.global_batch(batches[0],
                                                  run.batch_sharding))
  after_one = jax.device_get(state)
  assert replicas(after_one).shape[0] == 8
  assert not np.allclose(replicas(after_one)[0], replicas(after_one)[1])
  np.testing.assert_array_equal(kernel(after_one), kernel(init))
  state, _, _ = step(state, sharding.global_batch(batches[1],
                                                  run.batch_sharding))
  average = kernel(jax.device_get(state))
  assert not np.allclose(average, kernel(init))
  for r in replicas(jax.device_get(state)):
    np.testing.assert_allclose(r, average, rtol=1e-6, atol=1e-7)

  run, step = local_run(tfds_data_dir, 2, outer="nesterov")
  diloco = run_steps(run, step, initial_state(run), batches)[2]
  w0 = kernel(init)
  np.testing.assert_allclose(kernel(diloco), w0 - 0.7 * 1.9 * (w0 - average),
                             rtol=1e-5, atol=1e-6)


def test_local_sgd_all_reduces_parameters_only_when_it_syncs(tfds_data_dir):
  """From the compiled HLO: synchronous SGD all-reduces the gradients (all
  parameter bytes) every step; local SGD's only non-scalar collective is
  the same bytes in its sync branch, so per step it moves 1 / H of them."""
  h = 4
  run, step = local_run(tfds_data_dir, h)
  state = jax.device_put(initial_state(run), run.state_shardings)
  batch = sharding.global_batch(global_batches(run.config)[0],
                                run.batch_sharding)
  hlo = step.lower(state, batch).compile().as_text()
  got = local_sgd.bytes_per_step(hlo, h)
  param_bytes = sum(x.nbytes for x in jax.tree.leaves(state.params))
  assert got["every_step"] == 0
  assert got["sync"] == param_bytes
  assert got["per_step"] == param_bytes / h
  # deeplearn.inspect alone counts the branch's all-reduce every step.
  assert sum((c.bytes - c.scalar_bytes) * c.count
             for c in parse_collectives(hlo)[0]) == param_bytes


def test_local_sgd_trains_and_checkpoints_its_replicas(tfds_data_dir,
                                                       tmp_path):
  """The loop runs the local-SGD step, evaluates the global weights and
  saves the replicas; they restore split over `data`, equal to the global
  weights after the last step (a sync: 10 steps, H = 5)."""
  config = tiny_config(tfds_data_dir, train__step_form="local_sgd",
                       train__local_steps=5, train__num_steps=10)
  config.train.progress = False
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["final"]["step"] == 10
  assert np.isfinite(summary["final"]["loss"])
  run = supervised.build(config)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  state, step = ckpt.restore_latest(step_lib.abstract_state(run))
  ckpt.close()
  assert step == 10
  replicas = state.opt_state.params["Dense_0"]["kernel"]
  assert replicas.shape[0] == 8 and replicas.sharding.spec[0] == ("data", "fsdp")
  for r in np.asarray(replicas):
    np.testing.assert_allclose(r, state.params["Dense_0"]["kernel"],
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("overrides, match", [
    (dict(optimizer__staleness_dist="unifrom"), "did you mean 'uniform'"),
    (dict(optimizer__replicas=3), "cut into 3 equal parts"),
    (dict(optimizer__replicas=2, train__step_form="shard_map"),
     "step_form='jit'"),
    (dict(train__step_form="local_sgd", optimizer__staleness=2),
     "staleness=0"),
    (dict(train__outer_optimizer="adam"), "'average' .local SGD"),
    (dict(train__local_steps=0), "local_steps=0"),
])
def test_config_errors_name_the_key(tfds_data_dir, overrides, match):
  with pytest.raises(ValueError, match=match):
    supervised.build(tiny_config(tfds_data_dir, **overrides))
