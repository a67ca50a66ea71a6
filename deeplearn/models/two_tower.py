"""Two-tower model: two recurrent encoders whose vectors score a pair.

Lecture concept: learning to rank pairs with a siamese-style architecture,
as the lectures' lemma-selection example: DeepMath premise selection (Alemi
et al., "DeepMath - Deep sequence models for premise selection", 2016)
embeds a conjecture and a candidate premise with two networks and scores the
pair. Each tower here is its own embedding -> (bidirectional) LSTM / GRU
stack (deeplearn/models/rnn.py) -> mean over the real tokens -> a linear
projection. Because candidates are encoded independently of the query, a
retrieval system encodes its whole collection once and ranks it with one
matrix product; the "mlp" score trades that for a richer pair function.

`score`: "dot" (u . v), "cosine" (cos(u, v) / temperature, as in contrastive
retrieval) or "mlp" over [u, v, |u - v|, u * v] (Mou et al. 2016; Conneau et
al.'s InferSent, 2017).
"""

import flax.linen as nn
import jax.numpy as jnp

from deeplearn.models.registry import register
from deeplearn.models.layers import Dense
from deeplearn.models.rnn import RNNStack

SCORES = ("dot", "cosine", "mlp")


class Tower(nn.Module):
  """tokens int [batch, time] (PAD = `pad_id` after the text) -> [batch, out_dim]."""
  vocab_size: int
  embed_dim: int
  hidden_size: int
  num_layers: int
  cell: str
  bidirectional: bool
  out_dim: int
  pad_id: int = 0
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, tokens, *, train: bool):
    real = (tokens != self.pad_id).astype(jnp.float32)  # [batch, time]
    x = nn.Embed(self.vocab_size, self.embed_dim, name="embed",
                 embedding_init=nn.with_logical_partitioning(
                     nn.initializers.normal(1.0), ("vocab", "embed")))(tokens)
    y = RNNStack(self.hidden_size, self.num_layers, self.cell, self.bidirectional,
                 self.dropout_rate, name="rnn")(
                     x, train=train, seq_lengths=real.sum(1).astype(jnp.int32))
    # Mean over real tokens: the padding a batch adds must not move the vector.
    pooled = (y * real[..., None]).sum(1) / jnp.maximum(real.sum(1, keepdims=True), 1.0)
    pooled = nn.Dropout(self.dropout_rate, deterministic=not train)(pooled)
    return Dense(self.out_dim, name="proj", kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("mlp", "embed")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))(pooled)


@register("two_tower")
class TwoTower(nn.Module):
  """queries int [B, Lq] and candidates int [C, Lc] -> scores [B, C], every
  query against every candidate; candidates [B, n, Lc] (n per query) ->
  scores [B, n]. The query and candidate towers share nothing."""
  vocab_size: int
  embed_dim: int = 32
  hidden_size: int = 64
  num_layers: int = 1
  cell: str = "lstm"
  bidirectional: bool = True
  out_dim: int = 64
  score: str = "cosine"
  temperature: float = 0.1  # "cosine": scores are cos / temperature
  mlp_dim: int = 128  # "mlp": hidden units of the pair scorer
  pad_id: int = 0
  dropout_rate: float = 0.0

  def setup(self):
    if self.score not in SCORES:
      raise ValueError(f"config.model.score={self.score!r}: use one of {SCORES}.")
    tower = lambda name: Tower(  # noqa: E731
        self.vocab_size, self.embed_dim, self.hidden_size, self.num_layers, self.cell,
        self.bidirectional, self.out_dim, self.pad_id, self.dropout_rate, name=name)
    self.query_tower, self.candidate_tower = tower("query"), tower("candidate")
    if self.score == "mlp":
      self.hidden = Dense(self.mlp_dim, kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), ("embed", "mlp")))
      self.out = Dense(1, kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), ("mlp", None)))

  def pair_scores(self, u, v):
    """Scores of vectors u [..., d] and v [..., d] (broadcast) -> [...]."""
    if self.score == "dot":
      return jnp.sum(u * v, -1)
    if self.score == "cosine":
      unit = lambda a: a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-6)  # noqa: E731
      return jnp.sum(unit(u) * unit(v), -1) / self.temperature
    u, v = jnp.broadcast_arrays(u, v)
    features = jnp.concatenate([u, v, jnp.abs(u - v), u * v], -1)
    return self.out(nn.relu(self.hidden(features)))[..., 0]

  def __call__(self, queries, candidates, *, train: bool):
    u = self.query_tower(queries, train=train)  # [B, d]
    if candidates.ndim == 3:  # n candidates per query
      v = self.candidate_tower(candidates.reshape(-1, candidates.shape[-1]), train=train)
      v = v.reshape(*candidates.shape[:2], -1)  # [B, n, d]
    else:
      v = self.candidate_tower(candidates, train=train)[None]  # [1, C, d]
    return self.pair_scores(u[:, None], v).astype(jnp.float32)
