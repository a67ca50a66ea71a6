"""Multi-layer perceptron: a stack of fully connected layers with a nonlinearity.

Lecture concept: the MLP / universal approximator, dropout as regularisation.
Reference: the MNIST-1D paper's `MLPBase` (Greydanus & Kobak, ICML 2024;
github.com/greydanus/mnist1d notebooks/models.py): 40 -> 100 -> 100 -> 10, 15,210
parameters, about 68% test accuracy. Its second layer is residual,
`h = h + relu(linear2(h))`; set `residual=True` to replicate it exactly.
"""

from typing import Sequence

import jax.numpy as jnp
import flax.linen as nn

from deeplearn.models import register
from deeplearn.models.layers import activation, logical_init


@register("mlp")
class MLP(nn.Module):
  """inputs: [batch, ...] flattened to [batch, features]. Returns [batch, num_classes].

  residual: add each hidden layer's input to its output where the widths match
    (never the first layer, whose input is the data).
  dropout_rate: dropout after each hidden activation, only when train=True.
  """
  num_classes: int = 10
  hidden_sizes: Sequence[int] = (100, 100)
  activation: str = "relu"
  dropout_rate: float = 0.0
  residual: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    act = activation(self.activation)
    h = inputs.reshape(inputs.shape[0], -1)
    for i, width in enumerate(self.hidden_sizes):
      # Hidden activations live on the "mlp" axis; the data and every layer's input
      # on "embed", so consecutive kernels alternate (embed, mlp) / (mlp, embed)
      # as in a transformer's feed-forward block.
      axes = ("embed", "mlp") if i % 2 == 0 else ("mlp", "embed")
      y = act(nn.Dense(width, dtype=self.dtype, **logical_init(*axes))(h))
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
      h = h + y if self.residual and i > 0 and h.shape[-1] == width else y
    last = "mlp" if len(self.hidden_sizes) % 2 else "embed"
    logits = nn.Dense(self.num_classes, dtype=self.dtype, **logical_init(last, "vocab"))(h)
    return logits.astype(jnp.float32)  # [batch, num_classes]; float32 for a stable softmax
