"""Residual networks: ResNet-18/34/50/101/152 (v1.5) and the fast CIFAR ResNet-9.

Lecture concept: residual connections y = relu(x + F(x)) with batch norm let
very deep nets train; 1x1 bottlenecks (50 layers and up) make them cheap.
Reference: He, Zhang, Ren & Sun, "Deep residual learning for image recognition",
CVPR 2016. The layout is torchvision's `resnet18` ... `resnet152` (pytorch/vision
torchvision/models/resnet.py), "v1.5": a bottleneck block strides on its 3x3
conv, not its first 1x1 (as in the flax ImageNet example and NVIDIA's
ResNet-50 v1.5). Projection shortcuts (1x1 conv + BN) wherever the shape
changes. Batch norm: epsilon 1e-5, momentum 0.9 (torch's 0.1); its scale and
bias are parameters (torchvision counts them too), the running statistics live
in `batch_stats` (torchvision's buffers). Conv kernels: He-normal, fan_out.

On [batch, 224, 224, 3] with 1,000 classes (width=64):

  stem: conv 7x7x64 stride 2 pad 3 (9,408) + BN (128) -> relu
        -> max-pool 3 stride 2 pad 1                          224 -> 112 -> 56
  stages at 56, 28, 14, 7 (the first block of stages 2-4 strides 2):
    18: basic blocks [2, 2, 2, 2], widths 64, 128, 256, 512
    34: basic blocks [3, 4, 6, 3]
    50: bottleneck blocks [3, 4, 6, 3], widths 64, 128, 256, 512 (outputs 4x)
  global average pool -> dense 1000 (513,000 or, at 4x, 2,049,000)
  = ResNet-18 11,689,512; ResNet-34 21,797,672; ResNet-50 25,557,032 parameters,
  as torchvision's.

  basic (3x3 -> 3x3):          conv 3x3 (stride) BN relu, conv 3x3 BN, + shortcut, relu
  bottleneck (1x1 -> 3x3 -> 1x1): conv 1x1 BN relu, conv 3x3 (stride) BN relu,
                                   conv 1x1 (4x) BN, + shortcut, relu

`resnet9` is the CIFAR-10 ResNet of the DAWNBench speed record (D. Page, "How to
train your ResNet", Myrtle.ai 2018; github.com/davidcpage/cifar10-fast dawn.py),
94% test accuracy in 24 epochs. All convs 3x3, padding 1, no bias, + BN + relu:

  prep conv 64 (1,728 + 128)                                  32
  layer1 conv 128 (73,728 + 256) -> max-pool 2, + residual (2 convs 128:
    2 x (147,456 + 256))                                      32 -> 16
  layer2 conv 256 (294,912 + 512) -> max-pool 2               16 -> 8
  layer3 conv 512 (1,179,648 + 1,024) -> max-pool 2, + residual (2 convs 512:
    2 x (2,359,296 + 1,024))                                  8 -> 4
  global max-pool -> dense 10 without bias (5,120) -> x 0.125
  = 6,573,120 parameters.
"""

from typing import Callable

import jax.numpy as jnp
import flax.linen as nn

from deeplearn.models.registry import register
from deeplearn.models.convnet import block_max_pool
from deeplearn.models.layers import Conv, Dense, logical_init
from deeplearn.models.mlp import apply_batch_norm

he_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# depth -> (bottleneck blocks?, blocks per stage)
DEPTHS = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)), 50: (True, (3, 4, 6, 3)),
          101: (True, (3, 4, 23, 3)), 152: (True, (3, 8, 36, 3))}


class ConvBN(nn.Module):
  """conv (no bias, symmetric padding k // 2 as torch's) -> batch norm [-> relu].
  in_axis: the logical name of the input channels (None for the image's).
  Also GoogLeNet's BasicConv2d (deeplearn.models.inception: epsilon 1e-3,
  LeCun-normal kernels)."""
  features: int
  kernel: int = 1
  strides: int = 1
  relu: bool = True
  bn_axis_name: str | tuple[str, ...] | None = None
  dtype: jnp.dtype = jnp.float32
  in_axis: str | None = "conv_in"
  epsilon: float = 1e-5
  kernel_init: Callable = he_normal

  @nn.compact
  def __call__(self, x, train: bool):
    pad = self.kernel // 2
    x = Conv(self.features, (self.kernel, self.kernel), strides=self.strides,
                padding=((pad, pad), (pad, pad)), use_bias=False, dtype=self.dtype,
                **logical_init(None, None, self.in_axis, "conv_out",
                               kernel_init=self.kernel_init))(x)
    x = apply_batch_norm(x, train, "conv_out", self.bn_axis_name, self.dtype,
                         epsilon=self.epsilon)
    return nn.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
  """A basic (bottleneck=False) or bottleneck block; outputs `features` channels
  (bottleneck: 4 * features), spatial size / strides."""
  features: int
  strides: int = 1
  bottleneck: bool = False
  bn_axis_name: str | tuple[str, ...] | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda *args, **kw: ConvBN(*args, bn_axis_name=self.bn_axis_name,  # noqa: E731
                                      dtype=self.dtype, **kw)
    if self.bottleneck:
      out = 4 * self.features
      y = conv(self.features, 1)(x, train)
      y = conv(self.features, 3, self.strides)(y, train)  # v1.5: the stride is here
      y = conv(out, 1, relu=False)(y, train)
    else:
      out = self.features
      y = conv(self.features, 3, self.strides)(x, train)
      y = conv(self.features, 3, relu=False)(y, train)
    if self.strides != 1 or x.shape[-1] != out:  # projection shortcut
      x = conv(out, 1, self.strides, relu=False, name="shortcut")(x, train)
    return nn.relu(x + y)


@register("resnet")
class ResNet(nn.Module):
  """inputs: [batch, H, W, C] images, H, W >= 32. Returns [batch, num_classes].

  depth: 18, 34 (basic blocks), 50, 101 or 152 (bottleneck blocks).
  width: channels of the first stage (64); the stages have 1, 2, 4, 8 x width.
  bn_axis_name: axes the batch statistics are averaged over, set by the explicit
    data-parallel steps; leave it None in configs (see ConvNet).
  """
  num_classes: int = 1000
  depth: int = 50
  width: int = 64
  bn_axis_name: str | tuple[str, ...] | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    if self.depth not in DEPTHS:
      raise ValueError(f"config.model.depth={self.depth}: ResNet has depth {sorted(DEPTHS)}")
    bottleneck, blocks = DEPTHS[self.depth]
    x = ConvBN(self.width, 7, 2, bn_axis_name=self.bn_axis_name, dtype=self.dtype,
               in_axis=None, name="stem")(inputs, train)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, n in enumerate(blocks):
      for i in range(n):
        x = ResidualBlock(self.width * 2 ** stage, 2 if stage > 0 and i == 0 else 1,
                          bottleneck, self.bn_axis_name, self.dtype,
                          name=f"stage{stage + 1}_block{i + 1}")(x, train)
    x = x.mean(axis=(1, 2))  # [batch, 8 * width (x 4 for bottlenecks)]
    logits = Dense(self.num_classes, dtype=self.dtype, **logical_init("embed", "vocab"))(x)
    return logits.astype(jnp.float32)  # [batch, num_classes]; float32 for a stable softmax


@register("resnet9")
class ResNet9(nn.Module):
  """The DAWNBench CIFAR-10 ResNet-9. inputs: [batch, H, W, C], H, W >= 8
  (32x32 CIFAR). Returns [batch, num_classes].

  width: channels of the prep layer (64); layers 1-3 have 2, 4, 8 x width.
  logit_scale: the constant the logits are multiplied by (0.125 in the reference).
  """
  num_classes: int = 10
  width: int = 64
  logit_scale: float = 0.125
  bn_axis_name: str | tuple[str, ...] | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    def conv(features, name, in_axis="conv_in"):
      return ConvBN(features, 3, bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                    in_axis=in_axis, name=name)

    x = conv(self.width, "prep", in_axis=None)(inputs, train)
    for layer, (multiple, residual) in enumerate(((2, True), (4, False), (8, True)), 1):
      features = multiple * self.width
      x = block_max_pool(conv(features, f"layer{layer}")(x, train), 2)
      if residual:
        y = conv(features, f"layer{layer}_res1")(x, train)
        x = x + conv(features, f"layer{layer}_res2")(y, train)
    x = x.max(axis=(1, 2))  # [batch, 8 * width]: the reference's MaxPool2d(4) at 4x4
    logits = Dense(self.num_classes, use_bias=False, dtype=self.dtype,
                      **logical_init("embed", "vocab"))(x)
    return logits.astype(jnp.float32) * self.logit_scale  # [batch, num_classes]
