"""LeNet-5: the convolutional network that read cheques, in its common modern form.

Lecture concept: the first successful convnet: local receptive fields, weight
sharing and subsampling, then fully connected layers.
Reference: LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to
document recognition", Proc. IEEE 1998. The layer sizes are the paper's; as in
the PyTorch "Neural Networks" tutorial's `Net` (the common PyTorch LeNet-5) C3 is
a full convolution (the paper connects each C3 map to a subset of S2's) and the
output is a linear layer (the paper's is an RBF layer). Defaults are that
tutorial's net (relu, max-pooling); activation="tanh", pooling="avg" is closer
to 1998.

On [batch, 32, 32, 1] (MNIST's 28x28 with padding=2 gives the same shapes):

  C1 conv 5x5x6 VALID (156) -> act -> pool 2      32 -> 28 -> 14
  C3 conv 5x5x16 VALID (2,416) -> act -> pool 2   14 -> 10 -> 5
  flatten 5*5*16 = 400 -> F5 dense 120 (48,120) -> act
  -> F6 dense 84 (10,164) -> act -> output dense 10 (850)
  = 61,706 parameters.
"""

import jax.numpy as jnp
import flax.linen as nn

from deeplearn.models.registry import register
from deeplearn.models.convnet import block_max_pool
from deeplearn.models.layers import Conv, Dense, activation, logical_init


@register("lenet5")
class LeNet5(nn.Module):
  """inputs: [batch, H, W, C] images ([batch, H, W] gets C=1). Returns [batch, num_classes].

  activation: "relu" (PyTorch tutorial), "tanh" or any flax / jax.nn function.
  pooling: "max" or "avg", 2x2 windows with stride 2.
  padding: zero padding of C1's input on each side (2 for 28x28 MNIST).
  """
  num_classes: int = 10
  activation: str = "relu"
  pooling: str = "max"
  padding: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    del train  # no dropout or batch norm
    if self.pooling not in ("max", "avg"):
      raise ValueError(f"config.model.pooling={self.pooling!r}: use 'max' or 'avg'")
    act = activation(self.activation)

    def pool(x):
      if self.pooling == "max":
        return block_max_pool(x, 2)
      return nn.avg_pool(x, (2, 2), strides=(2, 2))

    x = inputs[..., None] if inputs.ndim == 3 else inputs
    p = self.padding
    # The image's channels are never split (None); C3 reads C1's channels whole.
    for features, padding, channels in ((6, ((p, p), (p, p)), None), (16, "VALID", "conv_in")):
      x = Conv(features, (5, 5), padding=padding, dtype=self.dtype,
                  **logical_init(None, None, channels, "conv_out"))(x)
      x = pool(act(x))
    x = x.reshape(x.shape[0], -1)  # [batch, 400]
    x = act(Dense(120, dtype=self.dtype, **logical_init("embed", "mlp"))(x))
    x = act(Dense(84, dtype=self.dtype, **logical_init("mlp", "embed"))(x))
    logits = Dense(self.num_classes, dtype=self.dtype, **logical_init("embed", "vocab"))(x)
    return logits.astype(jnp.float32)  # [batch, num_classes]; float32 for a stable softmax
