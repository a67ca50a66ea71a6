"""A neural n-gram language model: the previous n-1 tokens predict the next.

Lecture concept: from count-based n-grams to a neural language model with
learned word embeddings; the smallest model of the next-token task.
Reference: Bengio, Ducharme, Vincent & Jauvin, "A neural probabilistic
language model", JMLR 2003 (embeddings of the context concatenated, a tanh
hidden layer, a softmax over the vocabulary; their direct connections are
left out).
"""

import flax.linen as nn
import jax.numpy as jnp

from deeplearn.models.registry import register
from deeplearn.models.layers import Dense, logical_init


@register("ngram_mlp")
class NGramMLP(nn.Module):
  """inputs: int tokens [batch, time]. Returns logits [batch, time, vocab_size].

  Position t sees tokens t-context+1 .. t (earlier positions of the window see
  zero embeddings where the context runs off its start), so the model is causal.
  """
  vocab_size: int
  context: int = 3  # n - 1
  embed_dim: int = 16
  hidden_size: int = 128
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    del train  # no dropout or batch norm
    embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(1.0), ("vocab", "embed")))
    x = embed(inputs)  # [batch, time, embed_dim]
    # The token k steps back, for k = 0 .. context-1: shift right along time.
    shifted = [jnp.pad(x, ((0, 0), (k, 0), (0, 0)))[:, :x.shape[1]]
               for k in range(self.context)]
    h = jnp.concatenate(shifted, axis=-1)  # [batch, time, context * embed_dim]
    h = nn.tanh(Dense(self.hidden_size, dtype=self.dtype,
                         **logical_init("embed", "mlp"))(h))
    logits = Dense(self.vocab_size, dtype=self.dtype,
                      **logical_init("mlp", "vocab"))(h)
    return logits.astype(jnp.float32)  # [batch, time, vocab_size]
