"""Sequence to sequence with attention: a bidirectional recurrent encoder and a
recurrent decoder that attends over the encoder's states at every step.

Lecture concepts: encoder-decoder models, attention as a soft, learned
alignment; teacher forcing in training; greedy and beam-search decoding.
References: Sutskever et al., "Sequence to sequence learning with neural
networks", 2014; Bahdanau et al., "Neural machine translation by jointly
learning to align and translate" (additive attention), 2015; Luong et al.,
"Effective approaches to attention-based neural machine translation"
(multiplicative "general" attention, input feeding), 2015.

One decoder step (`decode_step`), from the previous token and state:
  bahdanau: score_j = v . tanh(W s_{t-1} + U h_j) with the previous state;
            context c_t from the weights; s_t = cell(s_{t-1}, [y_{t-1}; c_t])
  luong:    s_t = cell(s_{t-1}, [y_{t-1}; o_{t-1}]) (input feeding);
            score_j = s_t . W h_j; context c_t from the weights
  both:     o_t = tanh(W_o [s_t; c_t]), logits = W_y o_t.
Training runs the step over the target with teacher forcing (the true
previous token); decoding feeds back its own tokens, greedily or with a beam.
Both decoders are jit-able with a fixed length: after EOS a row emits PAD.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from deeplearn.models.registry import register
from deeplearn.models.layers import Dense
from deeplearn.models.rnn import RNNStack, make_cell

ATTENTIONS = ("bahdanau", "luong")


def _named(*axes, init=nn.initializers.lecun_normal()):
  return dict(kernel_init=nn.with_logical_partitioning(init, axes),
              bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[-1:]))


class Attention(nn.Module):
  """Weights over the source positions for one query: -> (context, weights)."""
  kind: str
  units: int

  @nn.compact
  def __call__(self, query, keys, mask):  # [batch, q], [batch, source, k], [batch, source]
    if self.kind == "bahdanau":  # additive
      hidden = jnp.tanh(Dense(self.units, use_bias=False, name="query",
                                 **_named("embed", "mlp"))(query)[:, None]
                        + Dense(self.units, name="key", **_named("embed", "mlp"))(keys))
      scores = Dense(1, use_bias=False, name="v", **_named("mlp", None))(hidden)[..., 0]
    elif self.kind == "luong":  # multiplicative, "general": s . W h
      projected = Dense(keys.shape[-1], use_bias=False, name="w",
                           **_named("embed", "mlp"))(query)
      scores = jnp.einsum("bk,bsk->bs", projected, keys)
    else:
      raise ValueError(f"config.model.attention={self.kind!r}: use one of {ATTENTIONS}.")
    scores = jnp.where(mask, scores.astype(jnp.float32), -1e9)
    weights = jax.nn.softmax(scores, axis=-1)  # [batch, source]
    return jnp.einsum("bs,bsk->bk", weights, keys), weights


@register("seq2seq")
class Seq2Seq(nn.Module):
  """source int [batch, source] (PAD = 0 after the text), decoder_inputs int
  [batch, target] (BOS, then the target shifted right) -> float32 logits
  [batch, target, vocab] (and the attention weights [batch, target, source]
  with `return_attention`). One embedding serves both sides (one char vocab).
  """
  vocab_size: int
  embed_dim: int = 32
  hidden_size: int = 128
  encoder_layers: int = 1
  cell: str = "lstm"
  attention: str = "bahdanau"
  attention_dim: int = 128
  dropout_rate: float = 0.0
  pad_id: int = 0

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=(
        nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed"))))
    self.encoder = RNNStack(self.hidden_size, self.encoder_layers, self.cell,
                            bidirectional=True, dropout_rate=self.dropout_rate)
    self.bridge = Dense(self.hidden_size, **_named("embed", "mlp"))
    self.decoder = make_cell(self.cell, self.hidden_size)
    self.attend = Attention(self.attention, self.attention_dim)
    self.combine = Dense(self.hidden_size, use_bias=False, **_named("embed", "mlp"))
    self.head = Dense(self.vocab_size, **_named("mlp", "vocab"))
    self.dropout = nn.Dropout(self.dropout_rate)

  def encode(self, source, train: bool = False):
    """-> (states [batch, source, 2 * hidden], mask [batch, source], decoder state)."""
    mask = source != self.pad_id
    lengths = jnp.maximum(mask.sum(-1), 1)
    x = self.dropout(self.embed(source), deterministic=not train)
    states = self.encoder(x, train=train, seq_lengths=lengths)
    mean = (states * mask[..., None]).sum(1) / lengths[:, None]
    h = jnp.tanh(self.bridge(mean))  # [batch, hidden]
    cell = (jnp.zeros_like(h), h) if self.cell == "lstm" else h  # LSTM carry is (c, h)
    return states, mask, (cell, jnp.zeros_like(h))  # (cell carry, previous output o)

  def decode_step(self, state, token, states, mask, train: bool = False):
    """One step: token int [batch] -> (state, logits [batch, vocab], weights [batch, source])."""
    cell, previous = state
    y = self.dropout(self.embed(token), deterministic=not train)
    if self.attention == "bahdanau":
      hidden = cell[1] if self.cell == "lstm" else cell
      context, weights = self.attend(hidden, states, mask)
      cell, s = self.decoder(cell, jnp.concatenate([y, context], -1))
    else:
      cell, s = self.decoder(cell, jnp.concatenate([y, previous], -1))
      context, weights = self.attend(s, states, mask)
    out = jnp.tanh(self.combine(jnp.concatenate([s, context], -1)))
    logits = self.head(self.dropout(out, deterministic=not train))
    return (cell, out), logits.astype(jnp.float32), weights

  def __call__(self, source, decoder_inputs, *, train: bool, return_attention: bool = False):
    states, mask, state = self.encode(source, train)
    logits, weights = [], []
    # Teacher forcing, unrolled: targets here are short (ISO dates: 11 tokens).
    for t in range(decoder_inputs.shape[1]):
      state, step_logits, step_weights = self.decode_step(
          state, decoder_inputs[:, t], states, mask, train)
      logits.append(step_logits)
      weights.append(step_weights)
    logits = jnp.stack(logits, 1)  # [batch, target, vocab]
    return (logits, jnp.stack(weights, 1)) if return_attention else logits


@functools.partial(jax.jit, static_argnames=("model", "max_len", "bos_id", "eos_id"))
def greedy_decode(model, variables, source, *, max_len: int, bos_id: int, eos_id: int):
  """The most likely next token at every step -> (tokens [batch, max_len], scores
  [batch] (sum of log-probabilities through EOS), weights [batch, max_len, source])."""
  states, mask, state = model.apply(variables, source, method=Seq2Seq.encode)
  pad = model.pad_id

  def step(carry, _):
    state, token, done, score = carry
    state, logits, weights = model.apply(variables, state, token, states, mask,
                                         method=Seq2Seq.decode_step)
    logp = jax.nn.log_softmax(logits)
    token = jnp.where(done, pad, jnp.argmax(logp, -1))
    score = score + jnp.where(done, 0.0, jnp.take_along_axis(logp, token[:, None], 1)[:, 0])
    return (state, token, done | (token == eos_id), score), (token, weights)

  batch = source.shape[0]
  init = (state, jnp.full((batch,), bos_id), jnp.zeros((batch,), bool), jnp.zeros((batch,)))
  (_, _, _, score), (tokens, weights) = jax.lax.scan(step, init, length=max_len)
  return tokens.T, score, weights.swapaxes(0, 1)


@functools.partial(jax.jit, static_argnames=("model", "beam_size", "max_len", "bos_id",
                                             "eos_id"))
def beam_search(model, variables, source, *, beam_size: int, max_len: int, bos_id: int,
                eos_id: int):
  """Keeps the `beam_size` best prefixes by summed log-probability (no length
  penalty); a finished one continues with PAD at no cost. Returns the best
  hypothesis as greedy_decode does. beam_size = 1 is greedy decoding."""
  states, mask, state = model.apply(variables, source, method=Seq2Seq.encode)
  batch, k, v, pad = source.shape[0], beam_size, model.vocab_size, model.pad_id
  flat = lambda x: jnp.repeat(x, k, axis=0)  # noqa: E731  [batch * k, ...]
  states, mask, state = jax.tree.map(flat, (states, mask, state))

  def pick(x, beam):  # rows of x [batch * k, ...] reordered by beam [batch, k]
    x = x.reshape(batch, k, *x.shape[1:])
    return jnp.take_along_axis(x, beam.reshape(batch, k, *[1] * (x.ndim - 2)), 1).reshape(
        batch * k, *x.shape[2:])

  def step(carry, t):
    state, token, done, score, tokens, weights = carry
    state, logits, w = model.apply(variables, state, token, states, mask,
                                   method=Seq2Seq.decode_step)
    logp = jax.nn.log_softmax(logits).reshape(batch, k, v)
    finished = jnp.where(jnp.arange(v) == pad, 0.0, -1e9)  # only PAD, free
    logp = jnp.where(done.reshape(batch, k, 1), finished, logp)
    score, index = jax.lax.top_k((score.reshape(batch, k, 1) + logp).reshape(batch, k * v), k)
    beam, token = index // v, (index % v).reshape(-1)
    state, done, tokens, weights = jax.tree.map(
        lambda x: pick(x, beam), (state, done, tokens, weights))
    tokens = tokens.at[:, t].set(token)
    weights = weights.at[:, t].set(pick(w, beam))
    return (state, token, done | (token == eos_id), score.reshape(-1), tokens, weights), None

  score = jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, -1e9), batch)  # one live beam at first
  init = (state, jnp.full((batch * k,), bos_id), jnp.zeros((batch * k,), bool), score,
          jnp.zeros((batch * k, max_len), jnp.int32),
          jnp.zeros((batch * k, max_len, source.shape[1])))
  (_, _, _, score, tokens, weights), _ = jax.lax.scan(step, init, jnp.arange(max_len))
  best = jnp.argmax(score.reshape(batch, k), -1)[:, None]  # [batch, 1]
  one = lambda x: pick(x, jnp.repeat(best, k, 1)).reshape(batch, k, *x.shape[1:])[:, 0]  # noqa
  return one(tokens), one(score), one(weights)


def save_attention_png(path, weights, source: str, target: str):
  """Writes the attention map weights [target, source] as a PNG: rows are the
  output chars, columns the input chars (matplotlib, imported here only)."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  weights = jax.device_get(weights)[:len(target), :len(source)]
  fig = Figure(figsize=(max(3, 0.3 * len(source) + 1), max(2, 0.3 * len(target) + 1)))
  ax = fig.subplots()
  ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
  ax.set_xticks(range(len(source)), list(source))
  ax.set_yticks(range(len(target)), list(target))
  ax.set_xlabel("source")
  ax.set_ylabel("output")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
