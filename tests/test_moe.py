"""The sparsely-gated mixture of experts: routing (top-1 to the argmax, top-k
in token order, capacity and dropped tokens), the load-balancing loss, the
limits where it is a dense MLP or the soft mixture, noisy gating, the task's
auxiliary loss, and expert parallelism (all-to-all) equal to one device."""

import functools
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from deeplearn import (config as config_lib, inspect as inspect_lib, models,
                       step as step_lib)
from deeplearn.hlo import parse_collectives
from deeplearn.schemes import supervised
from deeplearn.parallel import mesh as mesh_lib, sharding
from deeplearn.models.moe import (MoE, capacity, expert_parallel,
                                  load_balancing_loss, route)
from deeplearn.models.transformer import MLP
from parallel_helpers import global_batches, initial_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOE = os.path.join(ROOT, "experiments", "shakespeare_transformer_moe.py")
LAYER = dict(dropout_rate=0.0, out_init_std=0.02)


def tokens(batch=2, length=6, embed=8, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(batch, length, embed)), jnp.float32)


def init(layer, x):
  """Parameters drawn wide (N(0, 0.5)) so that the gate is far from uniform."""
  shapes = nn.unbox(jax.eval_shape(layer.init, jax.random.PRNGKey(0), x))
  rng = np.random.default_rng(1)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype), shapes)


def apply(layer, variables, x, **kwargs):
  return jax.jit(functools.partial(layer.apply, **kwargs))(variables, x)


def experts_by_hand(params, x):
  """Every expert on every token, [batch, length, experts, embed], numpy."""
  x = np.asarray(x, np.float64)
  hid = np.einsum("blm,emh->bleh", x, params["fc"]) + params["fc_bias"]
  hid = np.asarray(nn.gelu(hid, approximate=True), np.float64)
  return np.einsum("bleh,ehm->blem", hid, params["proj"]) + params["proj_bias"]


def test_one_expert_with_room_for_every_token_is_the_dense_mlp():
  x = tokens()
  moe = MoE(num_experts=1, mlp_dim=16, capacity_factor=1.0, **LAYER)
  variables = init(moe, x)
  y, stats = apply(moe, variables, x)
  p = variables["params"]
  dense = {"params": {"fc": {"kernel": p["fc"][0], "bias": p["fc_bias"][0]},
                      "proj": {"kernel": p["proj"][0], "bias": p["proj_bias"][0]}}}
  mlp = MLP(16, deterministic=True, dtype=jnp.float32,
            param_dtype=jnp.float32, **LAYER)
  np.testing.assert_allclose(y, mlp.apply(dense, x), rtol=1e-5, atol=1e-6)
  assert y.shape == x.shape and float(stats["dropped"]) == 0.0
  assert float(stats["load_balancing_loss"]) == pytest.approx(1.0)


def test_soft_mode_and_top_k_of_all_experts_are_the_softmax_weighted_sum():
  x = tokens()
  soft = MoE(num_experts=4, mlp_dim=16, mode="soft", **LAYER)
  variables = init(soft, x)
  p = jax.tree.map(np.asarray, variables["params"])
  gate = np.asarray(jax.nn.softmax(np.einsum("blm,me->ble", x, p["gate"])))
  want = np.einsum("blem,ble->blm", experts_by_hand(p, x), gate)
  np.testing.assert_allclose(apply(soft, variables, x)[0], want, rtol=1e-4,
                             atol=1e-5)
  # Sparse routing with every expert chosen and room for every token: the
  # renormalised top-4 gates are the softmax itself.
  every = MoE(num_experts=4, mlp_dim=16, top_k=4, capacity_factor=1.0, **LAYER)
  y, stats = apply(every, variables, x)
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
  assert float(stats["dropped"]) == 0.0


def test_top1_sends_each_token_to_the_argmax_weighted_by_its_probability():
  probs = jax.nn.softmax(jnp.asarray(np.random.default_rng(2).normal(
      size=(3, 10, 4)), jnp.float32) * 3)
  combine, dispatch, dropped = route(probs, 1, capacity_=10)
  best = np.argmax(probs, -1)
  np.testing.assert_array_equal(dispatch.sum(-1), jax.nn.one_hot(best, 4))
  np.testing.assert_allclose(combine.sum((-1, -2)), probs.max(-1), rtol=1e-6)
  # Slots are handed out in token order: the i-th token of a group that
  # chose expert e sits in slot i.
  slots = np.argmax(dispatch.sum(-2), -1)  # [group, length]
  for g in range(3):
    for e in range(4):
      np.testing.assert_array_equal(slots[g][best[g] == e],
                                    np.arange(np.sum(best[g] == e)))
  assert float(dropped) == 0.0


def test_tokens_over_capacity_are_dropped_and_counted():
  # 6 tokens, 2 experts, top-2: first choices 0,0,0,1,0,1; capacity 3 of 6.
  first = np.array([0, 0, 0, 1, 0, 1])
  probs = np.where(np.eye(2)[first] > 0, 0.7, 0.3)[None].astype(np.float32)
  assert capacity(6, 2, 2, 0.5) == 3
  combine, dispatch, dropped = route(jnp.asarray(probs), 2, capacity_=3)
  # Every token picks both experts; slots go in token order, so tokens 0-2
  # fill both experts' 3 slots and tokens 3-5 find both full.
  kept = np.asarray(dispatch.sum(-1))[0]  # [length, experts]
  np.testing.assert_array_equal(kept, [[1, 1], [1, 1], [1, 1], [0, 0],
                                       [0, 0], [0, 0]])
  assert float(dropped) == pytest.approx(6 / 12)
  # Gates of the kept choices renormalised over the token's two choices.
  np.testing.assert_allclose(np.asarray(combine.sum(-1))[0, 0], [0.7, 0.3])
  # In the layer a token with no slot gets exactly 0 (the residual carries it).
  x = tokens(batch=1, length=6, embed=4)
  moe = MoE(num_experts=2, mlp_dim=8, top_k=1, capacity_factor=1 / 6, **LAYER)
  variables = init(moe, x)
  y, stats = apply(moe, variables, x)
  assert float(stats["dropped"]) == pytest.approx(4 / 6)  # 1 slot x 2 experts
  assert np.sum(np.all(np.asarray(y[0]) == 0.0, -1)) == 4


def test_load_balancing_loss_is_the_formula_and_one_when_uniform():
  probs = jnp.asarray([[[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3],
                        [0.1, 0.1, 0.8]]])
  experts = jnp.argmax(probs, -1)
  f = np.array([2, 1, 1]) / 4
  p = np.asarray(probs[0]).mean(0)
  assert float(load_balancing_loss(probs, experts)) == pytest.approx(
      3 * np.sum(f * p), rel=1e-6)
  uniform = jnp.full((2, 6, 3), 1 / 3)
  balanced = jnp.asarray([[0, 1, 2, 0, 1, 2]] * 2)
  assert float(load_balancing_loss(uniform, balanced)) == pytest.approx(1.0)
  collapsed = jnp.asarray([[[0.9, 0.05, 0.05]] * 6])
  assert float(load_balancing_loss(collapsed, jnp.zeros((1, 6), int))) > 2.5


def test_noisy_gating_changes_routing_in_training_only():
  x = tokens(length=16)
  noisy = MoE(num_experts=4, mlp_dim=8, noisy_gating=True, **LAYER)
  variables = init(noisy, x)
  plain = MoE(num_experts=4, mlp_dim=8, **LAYER)
  without_noise = {"params": {k: v for k, v in variables["params"].items()
                              if k != "noise"}}
  np.testing.assert_array_equal(apply(noisy, variables, x)[0],
                                apply(plain, without_noise, x)[0])
  train_noisy = noisy.clone(deterministic=False)
  a, b = (apply(train_noisy, variables, x,
                rngs={"dropout": jax.random.PRNGKey(s)})[0] for s in (0, 1))
  assert not np.allclose(a, b)


def test_transformer_moe_blocks_and_the_task_adds_the_weighted_aux_loss(
    tfds_data_dir):
  config = config_lib.from_file(MOE + ":tiny")
  config.data.data_dir = tfds_data_dir
  run = supervised.build(config, devices=jax.devices()[:1])
  state = initial_state(run)
  params = state.params
  assert "moe" in params["block_1"] and "mlp" in params["block_0"]
  assert params["block_1"]["moe"]["fc"].shape == (4, 32, 128)
  batch = jax.tree.map(jnp.asarray, global_batches(config)[0])
  loss, (sums, _) = jax.jit(run.task.loss)(params, state.model_state, batch,
                                           None)
  logits = run.task.model.apply({"params": params}, batch["inputs"],
                                train=False)
  ce = jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits),
                                     batch["targets"][..., None], -1))
  aux = sums["moe_aux_loss"] / sums["count"]
  assert 1.0 <= float(aux) < 4.0  # one MoE layer of 4 experts
  assert 0.0 <= float(sums["moe_dropped"] / sums["count"]) < 1.0
  np.testing.assert_allclose(loss, ce + 0.01 * aux, rtol=1e-5)
  with pytest.raises(ValueError, match="scan_layers"):
    models.get_model({**config.model.to_dict(), "scan_layers": True}).init(
        jax.random.PRNGKey(0), batch["inputs"], train=False)


def test_shard_map_layer_with_all_to_alls_equals_one_device():
  """Top-2 over 4 experts, batch over data 2 x expert 4: outputs, stats and
  gradients of the explicit form equal the layer on one device."""
  x = tokens(batch=8, length=12, embed=8)
  layer = MoE(num_experts=4, mlp_dim=16, top_k=2, capacity_factor=1.0, **LAYER)
  params = init(layer, x)["params"]
  mesh = mesh_lib.make_mesh({"data": 2, "expert": 4})
  weights = jnp.asarray(np.random.default_rng(3).normal(size=x.shape),
                        jnp.float32)

  def objective(forward):
    def f(params, x):
      y, stats = forward(params, x)
      return jnp.sum(y * weights) + stats["load_balancing_loss"], (y, stats)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))

  one = objective(lambda p, x: layer.apply({"params": p}, x))
  many = objective(lambda p, x: expert_parallel(layer, p, x, mesh))
  (value, (y, stats)), grads = one(params, x)
  (got_value, (got_y, got_stats)), got_grads = many(params, x)
  np.testing.assert_allclose(got_y, y, rtol=1e-5, atol=1e-6)
  assert 0.0 < float(stats["dropped"]) < 1.0  # capacity 1.0: some dropped
  for key in stats:
    np.testing.assert_allclose(got_stats[key], stats[key], rtol=1e-6)
  np.testing.assert_allclose(got_value, value, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(grads),
                  strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # Dispatch and combine, forward and backward. (Counted in the HLO text:
  # XLA:CPU gives shard_map's all-to-alls one channel id, which
  # hlo.parse_collectives takes for copies of one collective.)
  hlo = many.lower(params, x).compile().as_text()
  assert len(re.findall(r"\) all-to-all\(", hlo)) == 4


def loss_and_grads(run, state, batch):
  """The loss, metric sums and gradients of one batch, on the run's mesh
  with its shardings, and the compiled HLO."""
  def grads(state, batch):
    with nn.logical_axis_rules(run.rules):  # as step_lib.make_train_step
      loss, sums, _, grads = step_lib.compute_grads(
          run, state.params, state.model_state, batch, state.rng)
      return loss, sums, grads

  fn = step_lib.MeshStep(jax.jit(grads, out_shardings=(
      None, None, run.state_shardings.params)), run.mesh)
  args = (jax.device_put(state, run.state_shardings),
          sharding.global_batch(batch, run.batch_sharding))
  compiled = fn.lower(*args).compile()
  return jax.device_get(compiled(*args)), compiled.as_text()


def test_expert_parallel_loss_and_gradients_equal_one_device_with_all_to_alls(
    tfds_data_dir):
  config = config_lib.from_file(MOE + ":tiny")
  config.data.data_dir = tfds_data_dir
  one = supervised.build(config, devices=jax.devices()[:1])
  state, batch = initial_state(one), global_batches(config)[0]
  (loss, sums, grads), _ = loss_and_grads(one, state, batch)

  config.mesh.update(data=2, expert=4)
  run = supervised.build(config)
  assert dict(run.mesh.shape) == {"data": 2, "fsdp": 1, "stage": 1,
                                  "expert": 4, "model": 1}
  assert run.state_shardings.params["block_1"]["moe"]["fc"].spec == P(
      "expert", None, None)
  assert run.batch_sharding.spec == P(("data", "fsdp", "expert"))
  (got_loss, got_sums, got_grads), hlo = loss_and_grads(run, state, batch)
  np.testing.assert_allclose(got_loss, loss, rtol=1e-6)
  for key in ("moe_aux_loss", "moe_dropped", "count"):
    np.testing.assert_allclose(got_sums[key], sums[key], rtol=1e-6)
  # Relative to the largest gradient: the key biases' gradients are exactly
  # 0 in theory (softmax ignores a shift of all keys), float noise here.
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got_grads),
                          jax.tree.leaves(grads), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale,
                               err_msg=jax.tree_util.keystr(path))

  # Two all-to-alls over the 4 experts' devices each way (dispatch and
  # combine, forward and backward), each of every slot a device's tokens
  # fill, [experts, batch / 8, capacity, embed] float32: what inspect's
  # theory says.
  collectives, _ = parse_collectives(hlo)
  all_to_all = [c for c in collectives if c.kind == "all-to-all"]
  slots = 4 * (16 // 8) * capacity(32, 4, 1, 1.25) * 32 * 4
  assert len(all_to_all) == 4
  assert all(c.group_size == 4 and c.bytes == slots for c in all_to_all)
  assert inspect_lib.moe_all_to_all_theory(run) == 4 * slots
