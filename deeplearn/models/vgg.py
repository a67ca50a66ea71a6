"""VGG: depth from stacks of 3x3 convolutions.

Lecture concept: very deep plain convnets: two 3x3 convs see what one 5x5 sees
with fewer parameters and one more nonlinearity; channels double whenever a
2x2 max-pool halves the resolution.
Reference: Simonyan & Zisserman, "Very deep convolutional networks for
large-scale image recognition", ICLR 2015 (configurations A = VGG-11, B = 13,
D = 16, E = 19); the layout is torchvision's `vgg11` ... `vgg19` and, with
batch_norm=True, `vgg*_bn` (pytorch/vision torchvision/models/vgg.py),
including its adaptive average pool to 7x7 before the classifier.

VGG-16 on [batch, 224, 224, 3] with 1,000 classes (width=64, hidden_size=4096);
every conv is 3x3, padding 1, + relu; every stage ends in a 2x2 max-pool:

  stage 1: 2 convs x 64 (1,792 + 36,928)                      224 -> 112
  stage 2: 2 convs x 128 (73,856 + 147,584)                   112 -> 56
  stage 3: 3 convs x 256 (295,168 + 2 x 590,080)              56 -> 28
  stage 4: 3 convs x 512 (1,180,160 + 2 x 2,359,808)          28 -> 14
  stage 5: 3 convs x 512 (3 x 2,359,808)                      14 -> 7
  adaptive avg-pool 7x7 -> flatten 7*7*512 = 25,088
  dense 4096 (102,764,544) -> relu -> dropout -> dense 4096 (16,781,312) -> relu
  -> dropout -> dense 1000 (4,097,000)
  = 138,357,544 parameters (VGG-11: 132,863,336), as torchvision's.

Conv kernels start from He-normal (fan_out) as torchvision's do: its variance
2 / fan keeps the activations' scale through a deep relu stack (He et al. 2015).
"""

import jax.numpy as jnp
import flax.linen as nn

from deeplearn.models.registry import register
from deeplearn.models.convnet import block_max_pool
from deeplearn.models.layers import Conv, Dense, logical_init
from deeplearn.models.mlp import apply_batch_norm
from deeplearn.models.pooling import adaptive_avg_pool

# depth -> convs in each of the five stages (stage widths: 1, 2, 4, 8, 8 x width)
STAGES = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
he_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


@register("vgg")
class VGG(nn.Module):
  """inputs: [batch, H, W, C] images, H, W >= 32. Returns [batch, num_classes].

  depth: 11, 13, 16 or 19 weight layers.
  width: channels of the first stage (64); later stages 2x, 4x, 8x, 8x.
  hidden_size: width of the two hidden dense layers.
  dropout_rate: dropout after each hidden dense layer, only when train=True.
  batch_norm: batch norm after every conv (which then drops its bias).
  bn_axis_name: axes the batch statistics are averaged over, set by the explicit
    data-parallel steps; leave it None in configs (see ConvNet).
  """
  num_classes: int = 1000
  depth: int = 16
  width: int = 64
  hidden_size: int = 4096
  dropout_rate: float = 0.5
  batch_norm: bool = False
  bn_axis_name: str | tuple[str, ...] | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    if self.depth not in STAGES:
      raise ValueError(f"config.model.depth={self.depth}: VGG has depth {sorted(STAGES)}")
    if min(inputs.shape[1:3]) < 32:  # five 2x2 pools: smaller maps pool to nothing
      raise ValueError(f"VGG needs images of at least 32x32, got {inputs.shape[1:3]}")
    x = inputs
    channels = None  # the image's channels are never split
    for stage, convs in enumerate(STAGES[self.depth]):
      for _ in range(convs):
        x = Conv(self.width * min(2 ** stage, 8), (3, 3), padding=((1, 1), (1, 1)),
                    use_bias=not self.batch_norm, dtype=self.dtype,
                    **logical_init(None, None, channels, "conv_out", kernel_init=he_normal))(x)
        channels = "conv_in"
        if self.batch_norm:
          x = apply_batch_norm(x, train, "conv_out", self.bn_axis_name, self.dtype)
        x = nn.relu(x)
      x = block_max_pool(x, 2)
    x = adaptive_avg_pool(x, (7, 7)).reshape(x.shape[0], -1)  # [batch, 7 * 7 * 8 * width]
    axes = ("embed", "mlp")
    for _ in range(2):
      x = Dense(self.hidden_size, dtype=self.dtype, **logical_init(*axes))(x)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
      axes = axes[::-1]
    logits = Dense(self.num_classes, dtype=self.dtype, **logical_init(axes[0], "vocab"))(x)
    return logits.astype(jnp.float32)  # [batch, num_classes]; float32 for a stable softmax
