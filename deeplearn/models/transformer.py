"""A decoder-only Transformer language model (GPT-2 style, pre-LayerNorm).

Lecture concepts: self-attention and the Transformer; model parallelism of its
layers (Megatron tensor parallelism, FSDP), rematerialisation and mixed
precision as the tools that make a large model fit.
References: Vaswani et al., "Attention is all you need", 2017; Radford et al.,
"Language models are unsupervised multitask learners" (GPT-2), 2019; Shoeybi
et al., "Megatron-LM", 2019 (the column / row splits named below).

Every parameter and the main activations carry logical axis names. Megatron's
tensor parallelism is the rules `heads, mlp, vocab -> model`: the Q/K/V and
MLP-in kernels split by columns (over heads / hidden units), the attention
output and MLP-out kernels by rows, so the forward pass needs one all-reduce
per attention and one per MLP; `embed -> fsdp` shards every parameter over the
data-parallel devices (FSDP / ZeRO-3). No parameter carries one name twice, nor
two of `heads`, `mlp`, `vocab`, so that table never asks one mesh axis to split
two dimensions of a parameter (flax would silently replicate the second).

Activation constraints (`nn.with_logical_constraint`) act only when logical
axis rules and a mesh are in context at trace time (`nn.logical_axis_rules`,
`jax.set_mesh`); otherwise they are no-ops and XLA propagates the parameters'
shardings on its own. The train loop sets both (`step.MeshStep`).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from deeplearn.models import layers
from deeplearn.models.registry import register
from deeplearn.models.layers import Dense, logical_init
from deeplearn.models.moe import MoE

REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    # Save matmul outputs without a batch dimension (the dense layers); the
    # attention einsums (batched over heads) are recomputed.
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _normal(stddev):
  return nn.initializers.normal(stddev)


def _named(init, axes):
  return nn.with_logical_partitioning(init, axes)


class Projection(nn.Module):
  """`einsum(equation, x, kernel) + bias`, the bias over the output axes.

  nn.DenseGeneral would do, but it initialises a flat 2-D kernel and reshapes
  it; under `nn.logical_axis_rules` and a mesh its 3-name constraint then
  meets a 2-D array and fails (flax 0.12.8), and apply re-runs the
  initialiser abstractly to check shapes, so training would fail too.
  """
  shape: tuple  # the kernel's
  axes: tuple  # its logical names; the bias takes the trailing output ones
  equation: str
  init_std: float = 0.02
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    out_rank = len(self.equation.split("->")[1]) - 2  # minus batch, length
    kernel = self.param("kernel", _named(_normal(self.init_std), self.axes),
                        self.shape, self.param_dtype)
    bias = self.param("bias", _named(nn.initializers.zeros_init(),
                                     self.axes[-out_rank:]),
                      self.shape[-out_rank:], self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    # the einsum as one 2-D matmul on CPU (layers.dot_general)
    return layers.dense_einsum(x, kernel, len(self.shape) - out_rank) + bias


class CausalSelfAttention(nn.Module):
  num_heads: int
  dropout_rate: float
  deterministic: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  out_init_std: float  # GPT-2 scales residual projections by 1/sqrt(2 * layers)

  @nn.compact
  def __call__(self, x):  # [batch, length, embed]
    embed_dim = x.shape[-1]
    head_dim = embed_dim // self.num_heads
    head = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    # Separate Q, K, V kernels [embed, heads, kv]: a column split over heads
    # keeps every head's attention on one device, with no communication.
    q, k, v = [nn.with_logical_constraint(
        Projection((embed_dim, self.num_heads, head_dim), ("embed", "heads", "kv"),
                   "ble,ehk->blhk", name=name, **head)(x),
        ("batch", "length", "heads", "kv")) for name in ("query", "key", "value")]
    # Softmax in float32 inside; a fused kernel (cuDNN) where one exists.
    y = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    y = nn.with_logical_constraint(y, ("batch", "length", "heads", "kv"))
    # Row split: each device holds its heads' rows of the output kernel; the
    # partial sums meet in one all-reduce.
    y = Projection((self.num_heads, head_dim, embed_dim), ("heads", "kv", "embed"),
                   "blhk,hke->ble", init_std=self.out_init_std, name="out",
                   **head)(y)
    return nn.Dropout(self.dropout_rate, deterministic=self.deterministic)(y)


class MLP(nn.Module):
  mlp_dim: int
  dropout_rate: float
  deterministic: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  out_init_std: float

  @nn.compact
  def __call__(self, x):  # [batch, length, embed]
    embed_dim = x.shape[-1]
    h = Dense(self.mlp_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="fc", **logical_init("embed", "mlp",
                                           kernel_init=_normal(0.02)))(x)
    h = nn.gelu(h, approximate=True)  # GPT-2's tanh approximation
    h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
    h = Dense(embed_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="proj", **logical_init(
                     "mlp", "embed", kernel_init=_normal(self.out_init_std)))(h)
    return nn.Dropout(self.dropout_rate, deterministic=self.deterministic)(h)


def _layer_norm(dtype, param_dtype, name):
  return nn.LayerNorm(
      epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, name=name,
      scale_init=_named(nn.initializers.ones_init(), ("embed",)),
      bias_init=_named(nn.initializers.zeros_init(), ("embed",)))


class Block(nn.Module):
  """x + attn(ln(x)), then x + mlp(ln(x)). Returns (x, None): the signature
  nn.scan wants of a layer (carry in, carry and per-layer output out); with
  `moe` (MoE's fields) the MLP is a mixture of experts and the per-layer
  output its stats."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float
  deterministic: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  out_init_std: float
  moe: dict | None = None

  @nn.compact
  def __call__(self, x, _=None):  # [batch, length, embed]
    common = dict(dropout_rate=self.dropout_rate, deterministic=self.deterministic,
                  dtype=self.dtype, param_dtype=self.param_dtype,
                  out_init_std=self.out_init_std)
    h = _layer_norm(self.dtype, self.param_dtype, "ln_attn")(x)
    x = x + CausalSelfAttention(self.num_heads, name="attn", **common)(h)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    h = _layer_norm(self.dtype, self.param_dtype, "ln_mlp")(x)
    stats = None
    if self.moe:
      h, stats = MoE(mlp_dim=self.mlp_dim, name="moe", **self.moe, **common)(h)
    else:
      h = MLP(self.mlp_dim, name="mlp", **common)(h)
    x = x + h
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), stats


@register("transformer")
class Transformer(nn.Module):
  """inputs: int tokens [batch, time], time <= max_len. Returns float32 logits
  [batch, time, vocab_size]; position t sees tokens 0..t only.

  `dtype` is the computation dtype (bfloat16 for mixed precision); parameters
  are stored in `param_dtype`. `remat` recomputes each block's activations in
  the backward pass ("full") or all but its dense matmuls ("dots"), trading
  compute for memory. `scan_layers` runs the blocks as one `nn.scan`: one
  block is compiled instead of `num_layers`, and every block parameter gets a
  leading `layers` axis (unsharded unless a rule names it).

  `moe_experts` > 0 makes the MLP of every `moe_every`-th block (the 2nd,
  4th, ...: GShard, Switch) a mixture of that many experts (deeplearn.models
  .moe), each of `mlp_dim`; in training the model sows into "aux_loss" the
  sum over those layers of the load-balancing loss, with `moe_aux_weight`,
  and the mean dropped fraction, with weight 0 (reported only).

  The forward pass is three compact methods, `embed`, `blocks` and `logits`,
  so that `model.apply(variables, ..., method=...)` runs one alone on the
  same parameters: pipeline parallelism (deeplearn.parallel.pipeline) runs
  them on different stages.
  """
  vocab_size: int
  max_len: int = 1024
  num_layers: int = 12
  num_heads: int = 12
  embed_dim: int = 768
  mlp_dim: int = 0  # 0: 4 * embed_dim
  dropout_rate: float = 0.0
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"  # none | full | dots
  scan_layers: bool = False
  tie_embeddings: bool = True  # the output layer is the token embedding's transpose
  # Rows of the embedding / output layer rounded up to a multiple of this, so
  # that `vocab -> model` splits them evenly (jit refuses uneven shardings);
  # Megatron and nanoGPT pad the same way. The extra rows are never looked up
  # and their logits are cut off, so the logits keep `vocab_size` columns.
  vocab_pad_multiple: int = 1
  moe_experts: int = 0  # 0: dense MLPs everywhere
  moe_every: int = 2
  moe_top_k: int = 1
  moe_capacity_factor: float = 1.25
  moe_mode: str = "sparse"  # sparse (top-k) | soft (dense softmax mixture)
  moe_noisy_gating: bool = False
  moe_aux_weight: float = 0.01  # Switch's alpha

  def _check(self, length):
    if self.embed_dim % self.num_heads:
      raise ValueError(f"config.model.embed_dim={self.embed_dim} must be a multiple"
                       f" of config.model.num_heads={self.num_heads}.")
    if self.vocab_pad_multiple < 1:
      raise ValueError(f"config.model.vocab_pad_multiple={self.vocab_pad_multiple}"
                       " must be >= 1 (1: no padding).")
    if self.remat not in ("none", *REMAT_POLICIES):
      raise ValueError(f"config.model.remat={self.remat!r}: use 'none', 'full' or"
                       " 'dots'.")
    if self.moe_experts and (self.scan_layers or self.moe_every < 1):
      raise ValueError(
          f"config.model.moe_experts={self.moe_experts} needs scan_layers=False"
          " (MoE and dense blocks differ, one scanned block cannot be both)"
          f" and moe_every >= 1 (got {self.moe_every}).")
    if length > self.max_len:
      # A position past the table would be clamped silently by the gather.
      raise ValueError(f"Sequences of {length} tokens exceed config.model.max_len="
                       f"{self.max_len}: raise max_len or lower config.data.seq_len.")

  def __call__(self, inputs, *, train: bool):
    return self.logits(self.blocks(self.embed(inputs, train), train))

  @nn.nowrap
  def _padded_vocab(self):  # rows of the embedding / output layer
    m = self.vocab_pad_multiple
    return -(-self.vocab_size // m) * m

  @nn.nowrap
  def _wte(self):
    """The token embedding. `embed` and tied `logits` each create it, under
    one name: both bind the same parameters."""
    # Vocabulary-parallel embedding when vocab -> model: each device holds a
    # slice of the vocabulary; the gather becomes a masked lookup + all-reduce.
    return nn.Embed(self._padded_vocab(), self.embed_dim,
                    dtype=jnp.dtype(self.dtype),
                    param_dtype=jnp.dtype(self.param_dtype), name="wte",
                    embedding_init=_named(_normal(0.02), ("vocab", "embed")))

  @nn.compact
  def embed(self, inputs, train: bool):
    """Token + position embeddings: int tokens -> [batch, length, embed]."""
    self._check(inputs.shape[1])
    wpe = nn.Embed(self.max_len, self.embed_dim, dtype=jnp.dtype(self.dtype),
                   param_dtype=jnp.dtype(self.param_dtype), name="wpe",
                   embedding_init=_named(_normal(0.02), ("length", "embed")))
    positions = jnp.arange(inputs.shape[1])[None]  # [1, length]
    x = self._wte()(inputs) + wpe(positions)  # [batch, length, embed]
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))

  @nn.compact
  def blocks(self, x, train: bool, num_layers: int | None = None):
    """The blocks on activations [batch, length, embed]. With scan_layers,
    `num_layers` (default the model's) is how many the scanned parameters
    hold: a pipeline stage runs its slice of the `layers` axis."""
    dtype, param_dtype = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
    block = Block
    if self.remat != "none":
      # Under nn.scan the loop already keeps XLA from merging the recomputation
      # with the forward pass, so prevent_cse's extra barriers are not needed.
      block = nn.remat(Block, policy=REMAT_POLICIES[self.remat],
                       prevent_cse=not self.scan_layers)
    layer = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim or 4 * self.embed_dim,
                 dropout_rate=self.dropout_rate, deterministic=not train,
                 dtype=dtype, param_dtype=param_dtype,
                 out_init_std=0.02 / (2 * self.num_layers) ** 0.5)
    if self.scan_layers:
      stack = nn.scan(block, length=num_layers or self.num_layers,
                      variable_axes={"params": 0},
                      split_rngs={"params": True, "dropout": True},
                      metadata_params={nn.PARTITION_NAME: "layers"})
      return stack(name="blocks", **layer)(x, None)[0]
    moe = dict(num_experts=self.moe_experts, top_k=self.moe_top_k,
               capacity_factor=self.moe_capacity_factor, mode=self.moe_mode,
               noisy_gating=self.moe_noisy_gating)
    stats = []
    for i in range(self.num_layers):
      is_moe = self.moe_experts and i % self.moe_every == self.moe_every - 1
      x, s = block(name=f"block_{i}", moe=moe if is_moe else None, **layer)(x)
      stats += [s] if is_moe else []
    if stats and train:  # into deeplearn.tasks.common.AUX_LOSSES (not
      # at init, which would store them as model state)
      self.sow("aux_loss", "moe_aux_loss", (self.moe_aux_weight, sum(
          s["load_balancing_loss"] for s in stats)))
      self.sow("aux_loss", "moe_dropped", (0.0, sum(
          s["dropped"] for s in stats) / len(stats)))
    return x

  @nn.compact
  def logits(self, x):
    """Final LayerNorm and output layer: float32 [batch, length, vocab_size]."""
    dtype, param_dtype = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
    x = _layer_norm(dtype, param_dtype, "ln_f")(x)
    if self.tie_embeddings:
      # wte.attend(x), as one 2-D matmul on CPU; [batch, length, vocab]
      logits = layers.dot_general(x, self._wte().embedding.astype(dtype),
                                  (((2,), (1,)), ((), ())))
    else:
      logits = Dense(self._padded_vocab(), use_bias=False, dtype=dtype,
                     param_dtype=param_dtype, name="head",
                     **logical_init("embed", "vocab", kernel_init=_normal(0.02)))(x)
    # Vocabulary-parallel softmax when vocab -> model: the logits stay split
    # over the vocabulary; the loss's max and sum reduce across devices.
    logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
    return logits[..., :self.vocab_size].astype(jnp.float32)
