"""Recurrent networks: stacked (and bidirectional) LSTM / GRU layers, and a
character-level recurrent language model trained with truncated BPTT.

Lecture concepts: recurrent networks and backpropagation through time; gated
cells against vanishing gradients; truncated BPTT with a carried state;
gradient clipping (config.optimizer.grad_clip_norm) against exploding ones.
References: Hochreiter & Schmidhuber, "Long short-term memory", 1997; Cho et
al., "Learning phrase representations using RNN encoder-decoder" (GRU), 2014;
Williams & Peng, "An efficient gradient-based algorithm for on-line training
of recurrent network trajectories" (truncated BPTT), 1990; Karpathy,
"The unreasonable effectiveness of recurrent neural networks" (char-rnn), 2015.

Truncated BPTT here is chunked BPTT inside one training sequence: with
`bptt_len = k` the sequence of `seq_len` tokens is cut into chunks of k; the
state at the end of a chunk starts the next one, but through
`lax.stop_gradient`, so gradients flow back at most k steps while the forward
pass sees the whole sequence. The state is not carried across train steps:
the pipeline's batches are shuffled windows, so row i of one batch does not
continue row i of the last (that would need a contiguous-stream pipeline).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from deeplearn.models.registry import register
from deeplearn.models.softmax import OUTPUTS

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


def make_cell(kind: str, features: int, name: str | None = None, dtype=jnp.float32):
  """An LSTM or GRU cell whose parameters carry logical axis names: the state
  and the inputs on `embed`, the gates on `mlp` (as TorchGRUCell)."""
  if kind not in CELLS:
    raise ValueError(f"config.model.cell={kind!r}: use one of {sorted(CELLS)}.")
  named = lambda init: nn.with_logical_partitioning(init, ("embed", "mlp"))  # noqa: E731
  return CELLS[kind](
      features, name=name, dtype=dtype,
      kernel_init=named(nn.initializers.lecun_normal()),
      recurrent_kernel_init=named(nn.initializers.orthogonal()),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)))


class RNNStack(nn.Module):
  """`num_layers` recurrent layers, dropout between them.

  inputs [batch, time, features] -> outputs [batch, time, hidden] (2 * hidden
  when bidirectional: forward and backward states concatenated), and with
  `return_carry` also the final carries, one per layer (a (forward, backward)
  pair for bidirectional layers). `initial_carry` is such a tuple, or None for
  zeros. `seq_lengths` [batch] stops each row's state at its length (padding).
  """
  hidden_size: int
  num_layers: int = 1
  cell: str = "lstm"
  bidirectional: bool = False
  dropout_rate: float = 0.0
  unroll: int = 1  # time steps per scan iteration (nn.RNN's unroll)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, initial_carry=None, seq_lengths=None,
               return_carry: bool = False):
    carries = []
    for i in range(self.num_layers):
      init = None if initial_carry is None else initial_carry[i]
      forward = nn.RNN(make_cell(self.cell, self.hidden_size, f"cell_{i}", self.dtype),
                       unroll=self.unroll,
                       name=f"layer_{i}" if not self.bidirectional else f"layer_{i}_fwd")
      if self.bidirectional:
        backward = nn.RNN(make_cell(self.cell, self.hidden_size, f"cell_{i}_bwd", self.dtype),
                          unroll=self.unroll, name=f"layer_{i}_bwd")
        carry, x = nn.Bidirectional(forward, backward, name=f"bi_{i}")(
            x, initial_carry=init, seq_lengths=seq_lengths, return_carry=True)
      else:
        carry, x = forward(x, initial_carry=init, seq_lengths=seq_lengths,
                           return_carry=True)
      carries.append(carry)
      if i < self.num_layers - 1:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return (tuple(carries), x) if return_carry else x


@register("rnn_lm")
class RNNLM(nn.Module):
  """Character (or token) language model: embedding -> stacked LSTM / GRU ->
  logits. inputs int [batch, time] -> float32 logits [batch, time, vocab].

  `bptt_len` > 0: truncated BPTT in chunks of that many steps (module
  docstring); the forward values equal full BPTT's, only gradients change.
  `carry` / `return_carry` continue a sequence from a previous call's state
  (sampling one token at a time). Unidirectional only: a bidirectional layer
  would let position t read the token it predicts.

  `output` picks the output layer of deeplearn/models/softmax.py: "softmax",
  "sampled" (`num_sampled` candidates from `proposal`) or "hierarchical"
  (Huffman tree of `counts`, balanced if empty). Given `targets` [batch,
  time] the model returns that layer's training loss per token instead of
  logits (sampled softmax draws from the "sample" rng); without, the logits
  are the full softmax's, or hierarchical softmax's exact log-probabilities.
  """
  vocab_size: int
  embed_dim: int = 64
  hidden_size: int = 256
  num_layers: int = 2
  cell: str = "lstm"
  dropout_rate: float = 0.0
  bptt_len: int = 0  # 0: full BPTT over the sequence
  unroll: int = 1  # time steps per scan iteration (nn.RNN's unroll)
  output: str = "softmax"  # or "sampled", "hierarchical"
  num_sampled: int = 64  # "sampled": candidates per batch
  proposal: str = "log_uniform"  # "sampled": or "unigram" (needs counts)
  counts: tuple = ()  # training count of each token id ("unigram", Huffman tree)

  @nn.compact
  def __call__(self, inputs, *, train: bool, carry=None, return_carry: bool = False,
               targets=None):
    x = nn.Embed(self.vocab_size, self.embed_dim, name="embed",
                 embedding_init=nn.with_logical_partitioning(
                     nn.initializers.normal(1.0), ("vocab", "embed")))(inputs)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    stack = RNNStack(self.hidden_size, self.num_layers, self.cell,
                     dropout_rate=self.dropout_rate, unroll=self.unroll, name="rnn")
    length = x.shape[1]
    chunk = self.bptt_len if 0 < self.bptt_len < length else length
    outputs = []
    for start in range(0, length, chunk):  # the same layers on every chunk
      if carry is not None and start > 0:
        carry = jax.lax.stop_gradient(carry)  # truncate BPTT here
      carry, y = stack(x[:, start:start + chunk], train=train, initial_carry=carry,
                       return_carry=True)
      outputs.append(y)
    y = jnp.concatenate(outputs, axis=1)  # [batch, time, hidden]
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    if self.output not in OUTPUTS:
      raise ValueError(f"config.model.output={self.output!r}: use one of {sorted(OUTPUTS)}.")
    extra = {"sampled": dict(num_sampled=self.num_sampled, proposal=self.proposal,
                             counts=self.counts),
             "hierarchical": dict(counts=self.counts)}.get(self.output, {})
    head = OUTPUTS[self.output](self.hidden_size, self.vocab_size, name="head", **extra)
    out = head(y) if targets is None else head.loss(y, targets)  # logits or losses
    return (carry, out) if return_carry else out

