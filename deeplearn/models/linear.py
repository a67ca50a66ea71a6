"""Logistic regression: one affine map from the flattened input to class logits.

Lecture concept: the linear classifier, the baseline every deeper model must beat.
Reference: the MNIST-1D paper's `LinearBase` (Greydanus & Kobak, "Scaling down deep
learning with MNIST-1D", ICML 2024; github.com/greydanus/mnist1d notebooks/models.py):
40 inputs -> 10 classes is 410 parameters, about 32% test accuracy on MNIST-1D.
"""

import jax.numpy as jnp
import flax.linen as nn

from deeplearn.models.registry import register
from deeplearn.models.layers import Dense, logical_init


@register("linear")
class Linear(nn.Module):
  """inputs: [batch, ...] of any trailing shape, flattened. Returns [batch, num_classes]."""
  num_classes: int = 10
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    del train  # nothing stochastic in a linear model
    x = inputs.reshape(inputs.shape[0], -1)
    logits = Dense(self.num_classes, dtype=self.dtype, **logical_init("embed", "vocab"))(x)
    return logits.astype(jnp.float32)  # [batch, num_classes]; float32 for a stable softmax
