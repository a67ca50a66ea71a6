"""A sparsely-gated mixture-of-experts (MoE) feed-forward layer.

Lecture concept: conditional computation, the "hard" mixture of experts: a
gating network sends each token to k of E expert MLPs, so parameters grow
with E while the FLOPs per token stay those of k experts; and expert
parallelism, the experts split over devices with tokens sent to them and back
by two all-to-alls. The "soft" mode is the dense mixture (Jacobs et al. 1991):
every expert on every token, weighted by the gate's softmax.
References: Shazeer et al., "Outrageously large neural networks: the
sparsely-gated mixture-of-experts layer", 2017 (noisy top-k gating); Lepikhin
et al., "GShard", 2020 (capacity, groups, one-hot dispatch / combine
einsums, top-2); Fedus et al., "Switch Transformers", 2021 (top-1, the
load-balancing loss E * sum_e f_e * P_e).

Dispatch and combine are einsums with one-hot masks [group, token, expert,
capacity], as in GShard and Mesh-TensorFlow: every sequence of the batch is a
group with its own expert capacity, so the result does not depend on how the
batch is split over devices. Under `EXPERT_PARALLEL_RULES` (deeplearn.config)
the tokens are split over `expert` (with `data`) outside the layer and the
experts' weights over `expert` inside it; the constraint on the dispatched
tokens [expert, group, capacity, embed] makes XLA's SPMD partitioner move
them with an all-to-all, and the combine moves them back with another.
`expert_parallel` is the same layer with the two all-to-alls written out
(shard_map and lax.all_to_all), as the lectures draw them.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

MODES = ("sparse", "soft")


def capacity(length: int, num_experts: int, top_k: int, factor: float) -> int:
  """Slots per expert and group: factor x the tokens an expert gets under
  perfectly balanced routing, at most the group's length."""
  return max(1, min(length, math.ceil(factor * length * top_k / num_experts)))


def route(probs, top_k: int, capacity_: int):
  """Top-k routing with a capacity per expert.

  probs: router softmax [group, length, experts]. Returns `combine`
  [group, length, experts, capacity] (the gate weight at the token's slot,
  0 elsewhere), `dispatch` (combine's support, float 0/1) and the fraction
  of (token, choice) pairs dropped because their expert was full.

  Slots are handed out in token order, all of a token's choices before the
  next token's (GShard serves all first choices before any second): then
  whether a token is dropped depends only on earlier tokens, as a causal
  model needs.
  For k > 1 the chosen gates are renormalised to sum to 1 (GShard); top-1
  keeps the raw probability (Switch), so the router still gets a gradient.
  """
  num_experts = probs.shape[-1]
  # k argmaxes, not lax.top_k: XLA's SPMD partitioner gathers a top_k's
  # operand onto every device, while a reduction stays split by batch.
  gates, experts, rest = [], [], probs
  for _ in range(top_k):
    experts.append(jnp.argmax(rest, axis=-1))
    gates.append(jnp.max(rest, axis=-1))
    rest = jnp.where(jax.nn.one_hot(experts[-1], num_experts, dtype=bool),
                     -1.0, rest)
  gates, experts = jnp.stack(gates, -1), jnp.stack(experts, -1)  # [g, l, k]
  if top_k > 1:
    gates = gates / jnp.sum(gates, -1, keepdims=True)
  choice = jax.nn.one_hot(experts, num_experts, dtype=probs.dtype)  # [g, l, k, e]
  g, l = probs.shape[:2]
  # Slot of each (token, choice) in its expert: how many pairs before it chose
  # the same expert.
  flat = choice.reshape(g, l * top_k, num_experts)
  position = (jnp.cumsum(flat, axis=1) - flat).reshape(choice.shape)
  keep = choice * (position < capacity_)
  slot = jax.nn.one_hot(jnp.sum(position * choice, -1).astype(jnp.int32),
                        capacity_, dtype=probs.dtype)  # [g, l, k, capacity]
  dispatch_k = keep[..., None] * slot[..., None, :]  # [g, l, k, e, c]
  combine = jnp.einsum("glkec,glk->glec", dispatch_k, gates)
  dispatch = jnp.sum(dispatch_k, axis=2)
  dropped = jnp.sum(choice - keep) / (g * l * top_k)
  return combine, dispatch, dropped


def load_balancing_loss(probs, experts, axis_name=None):
  """Switch / GShard auxiliary loss E * sum_e f_e * P_e: f_e the fraction of
  tokens whose first choice is e, P_e the mean gate probability of e. Its
  minimum, 1, is uniform routing; only P_e carries a gradient. `axis_name`:
  the batch is split over these shard_map axes; f and P average over them."""
  num_experts = probs.shape[-1]
  f = jnp.mean(jax.nn.one_hot(experts, num_experts, dtype=probs.dtype),
               axis=(0, 1))
  p = jnp.mean(probs, axis=(0, 1))
  if axis_name:
    f, p = jax.lax.pmean((f, p), axis_name)
  return num_experts * jnp.sum(f * p)


def experts_mlp(x, w_in, b_in, w_out, b_out):
  """Each expert's MLP on its slots: [experts, group, capacity, embed]."""
  hid = nn.gelu(jnp.einsum("egcm,emh->egch", x, w_in) + b_in[:, None, None],
                approximate=True)
  return jnp.einsum("egch,ehm->egcm", hid, w_out) + b_out[:, None, None]


class MoE(nn.Module):
  """[batch, length, embed] -> (same shape, stats).

  `stats`: `load_balancing_loss` and `dropped` (the fraction of (token,
  choice) pairs over capacity; a dropped token gets 0 from this layer and
  goes on through the residual connection). Each expert is the Transformer's
  MLP (embed -> mlp_dim -> embed, GELU); its weights carry a leading
  `expert` logical axis.
  """
  num_experts: int
  mlp_dim: int
  top_k: int = 1
  capacity_factor: float = 1.25
  mode: str = "sparse"  # sparse: top-k routing | soft: all experts, softmax
  noisy_gating: bool = False  # Shazeer's learned Gaussian noise, training only
  dropout_rate: float = 0.0
  deterministic: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  out_init_std: float = 0.02

  def _check(self):
    if self.mode not in MODES:
      raise ValueError(f"config.model.moe_mode={self.mode!r}: use one of"
                       f" {list(MODES)}.")
    if not 1 <= self.top_k <= self.num_experts:
      raise ValueError(f"config.model.moe_top_k={self.top_k} must be between 1"
                       f" and config.model.moe_experts={self.num_experts}.")
    if self.capacity_factor <= 0:
      raise ValueError(f"config.model.moe_capacity_factor="
                       f"{self.capacity_factor} must be > 0.")

  def _param(self, name, init, shape, axes):
    return self.param(name, nn.with_logical_partitioning(init, axes), shape,
                      self.param_dtype)

  @nn.compact
  def __call__(self, x):  # [batch, length, embed]
    self._check()
    e, m, h = self.num_experts, x.shape[-1], self.mlp_dim
    # The gate in float32 even under bfloat16 (Switch's selective precision):
    # its softmax and top-k decide where tokens go.
    x32 = x.astype(jnp.float32)
    w_gate = self._param("gate", nn.initializers.normal(0.02), (m, e),
                         ("embed", None))
    logits = jnp.einsum("blm,me->ble", x32, w_gate.astype(jnp.float32))
    if self.noisy_gating:
      # H(x) = x W_g + N(0, 1) softplus(x W_noise), W_noise from zeros.
      w_noise = self._param("noise", nn.initializers.zeros_init(), (m, e),
                            ("embed", None))
      if not self.deterministic:
        scale = jax.nn.softplus(jnp.einsum("blm,me->ble", x32, w_noise))
        logits = logits + scale * jax.random.normal(
            self.make_rng("dropout"), logits.shape)
    probs = nn.with_logical_constraint(  # [batch, length, experts]
        jax.nn.softmax(logits, axis=-1), ("batch", "length", None))

    w_in = self._param("fc", nn.initializers.normal(0.02), (e, m, h),
                       ("expert", "embed", "mlp"))
    b_in = self._param("fc_bias", nn.initializers.zeros_init(), (e, h),
                       ("expert", "mlp"))
    w_out = self._param("proj", nn.initializers.normal(self.out_init_std),
                        (e, h, m), ("expert", "mlp", "embed"))
    b_out = self._param("proj_bias", nn.initializers.zeros_init(), (e, m),
                        ("expert", "embed"))
    x, w_in, b_in, w_out, b_out = nn.dtypes.promote_dtype(
        x, w_in, b_in, w_out, b_out, dtype=self.dtype)

    if self.mode == "soft":
      hid = nn.gelu(jnp.einsum("blm,emh->bleh", x, w_in) + b_in, approximate=True)
      out = jnp.einsum("bleh,ehm->blem", hid, w_out) + b_out
      y = jnp.einsum("blem,ble->blm", out, probs.astype(self.dtype))
      stats = {"load_balancing_loss": jnp.zeros((), jnp.float32),
               "dropped": jnp.zeros((), jnp.float32)}
    else:
      cap = capacity(x.shape[1], e, self.top_k, self.capacity_factor)
      combine, dispatch, dropped = route(probs, self.top_k, cap)
      # The masks stay with their tokens: the all-to-alls move activations.
      combine, dispatch = (nn.with_logical_constraint(
          a, ("batch", "length", None, None)) for a in (combine, dispatch))
      # All-to-all #1 under expert parallelism: tokens split by batch ->
      # slots split by expert.
      expert_in = nn.with_logical_constraint(
          jnp.einsum("blec,blm->ebcm", dispatch.astype(self.dtype), x),
          ("expert", "batch", None, "embed"))
      out = nn.with_logical_constraint(
          experts_mlp(expert_in, w_in, b_in, w_out, b_out),
          ("expert", "batch", None, "embed"))
      # All-to-all #2: back to the tokens' devices, weighted by the gates.
      y = jnp.einsum("blec,ebcm->blm", combine.astype(self.dtype), out)
      experts = jnp.argmax(probs, axis=-1)
      stats = {"load_balancing_loss": load_balancing_loss(probs, experts),
               "dropped": dropped}
    y = nn.with_logical_constraint(y, ("batch", "length", "embed"))
    y = nn.Dropout(self.dropout_rate, deterministic=self.deterministic)(y)
    return y, stats


def expert_parallel(layer: MoE, params, x, mesh, axis="expert",
                    batch_axes=("data", "expert")):
  """The sparse layer with its collectives written out (shard_map): what
  `layer.apply({"params": params}, x)` returns, without noise or dropout.

  Each device routes its sequences (the batch split over `batch_axes`) and
  holds E / n experts (n = the size of `axis`); one all-to-all sends every
  expert's slots to the device holding it, a second brings the outputs back.
  """
  cap = capacity(x.shape[1], layer.num_experts, layer.top_k,
                 layer.capacity_factor)

  def local(p, x):  # x [batch / shards, length, embed]; E / n experts
    probs = jax.nn.softmax(jnp.einsum("blm,me->ble", x, p["gate"]), axis=-1)
    combine, dispatch, dropped = route(probs, layer.top_k, cap)
    expert_in = jnp.einsum("blec,blm->ebcm", dispatch, x)  # [E, b, C, M]
    # Expert e's slots to e's device, the groups of the axis' devices side
    # by side: [E / n, n b, C, M].
    expert_in = jax.lax.all_to_all(expert_in, axis, 0, 1, tiled=True)
    out = experts_mlp(expert_in, p["fc"], p["fc_bias"], p["proj"],
                      p["proj_bias"])
    out = jax.lax.all_to_all(out, axis, 1, 0, tiled=True)  # [E, b, C, M]
    y = jnp.einsum("blec,ebcm->blm", combine, out)
    loss = load_balancing_loss(probs, jnp.argmax(probs, -1), batch_axes)
    return y, {"load_balancing_loss": loss,
               "dropped": jax.lax.pmean(dropped, batch_axes)}

  specs = {k: P() if k in ("gate", "noise") else P(axis) for k in params}
  return jax.shard_map(local, mesh=mesh, in_specs=(specs, P(batch_axes)),
                       out_specs=(P(batch_axes), P()))(params, x)
