"""Multi-layer perceptron: a stack of fully connected layers with a nonlinearity.

Lecture concept: the MLP / universal approximator, dropout as regularisation.
Reference: the MNIST-1D paper's `MLPBase` (Greydanus & Kobak, ICML 2024;
github.com/greydanus/mnist1d notebooks/models.py): 40 -> 100 -> 100 -> 10, 15,210
parameters, about 68% test accuracy. Its second layer is residual,
`h = h + relu(linear2(h))`; set `residual=True` to replicate it exactly.

`batch_norm=True` normalises each hidden layer's pre-activations over the batch
(Ioffe & Szegedy, ICML 2015); see `bn_axis_name` for data-parallel training.
Initialisation (`kernel_init`, `bias_init`, `last_layer_scale`): see
deeplearn.models.layers.kernel_initializer.

Tensor parallelism (Megatron, Shoeybi et al. 2019): layer i's outputs are named
`mlp` when i is even and `embed` when odd, so the kernels alternate
(embed, mlp) / (mlp, embed) and the rule `mlp -> model` splits them by columns
then rows: one all-reduce per pair of layers. The classifier is (mlp, vocab)
after an odd number of hidden layers (a row split), else (embed, vocab).
Activations carry logical names (`nn.with_logical_constraint`), applied only
when the train step sets the rules and a mesh (step.MeshStep).
"""

from typing import Sequence

import jax.numpy as jnp
import flax.linen as nn

from deeplearn.models.registry import register
from deeplearn.models.layers import Dense, activation, dense_inits


def apply_batch_norm(x, train: bool, axis: str, axis_name, dtype, epsilon=1e-5):
  """Batch norm over all but the last axis of x, whose logical name is `axis`.

  Momentum 0.9 is PyTorch's default (its momentum=0.1): flax's 0.99 leaves the
  running statistics near their initial values for the first few hundred steps.
  `epsilon` is PyTorch's and flax's default, 1e-5 (torchvision's GoogLeNet: 1e-3).
  """
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=epsilon,
      axis_name=axis_name, dtype=dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axis,)))(x)


@register("mlp")
class MLP(nn.Module):
  """inputs: [batch, ...] flattened to [batch, features]. Returns [batch, num_classes].

  residual: add each hidden layer's input to its output where the widths match
    (never the first layer, whose input is the data).
  dropout_rate: dropout after each hidden activation, only when train=True.
  batch_norm: batch norm between each hidden Dense (then without bias) and its
    activation; running statistics in the `batch_stats` collection.
  bn_axis_name: mesh / pmap axes the batch statistics are averaged over
    (cross-replica batch norm). Leave it None in configs: under jit with a
    sharded batch the statistics are already global, and the explicit steps of
    deeplearn.parallel.data_parallel set it themselves.
  kernel_init: every kernel's initialiser by name: "lecun_normal" (fan-in
    scaled), "he_normal" (for relu), "glorot_normal", "glorot_uniform" or a
    fixed "normal(0.01)".
  bias_init: the hidden layers' initial bias (0.1: relu units start active);
    the classifier's stays 0. No effect with batch_norm (no hidden biases).
  last_layer_scale: multiplies the classifier's initial kernel; 0.01 gives
    near-equal initial logits (a near-uniform softmax).
  """
  num_classes: int = 10
  hidden_sizes: Sequence[int] = (100, 100)
  activation: str = "relu"
  dropout_rate: float = 0.0
  residual: bool = False
  batch_norm: bool = False
  bn_axis_name: str | tuple[str, ...] | None = None
  kernel_init: str = "lecun_normal"
  bias_init: float = 0.0
  last_layer_scale: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    act = activation(self.activation)
    h = nn.with_logical_constraint(inputs.reshape(inputs.shape[0], -1), ("batch", "embed"))
    for i, width in enumerate(self.hidden_sizes):
      # The data is on "embed"; layer outputs alternate "mlp" / "embed", so
      # consecutive kernels alternate (embed, mlp) / (mlp, embed), as in a
      # transformer's feed-forward block.
      axes = ("embed", "mlp") if i % 2 == 0 else ("mlp", "embed")
      y = Dense(width, use_bias=not self.batch_norm, dtype=self.dtype,
                   **dense_inits(axes, self.kernel_init, self.bias_init))(h)
      if self.batch_norm:  # BN's own bias replaces the Dense bias
        y = apply_batch_norm(y, train, axes[1], self.bn_axis_name, self.dtype)
      y = nn.with_logical_constraint(act(y), ("batch", axes[1]))
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
      h = h + y if self.residual and i > 0 and h.shape[-1] == width else y
    last = "mlp" if len(self.hidden_sizes) % 2 else "embed"
    logits = Dense(self.num_classes, dtype=self.dtype, **dense_inits(
        (last, "vocab"), self.kernel_init, scale=self.last_layer_scale))(h)
    return logits.astype(jnp.float32)  # [batch, num_classes]; float32 for a stable softmax
