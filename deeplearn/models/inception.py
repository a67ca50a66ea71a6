"""GoogLeNet (Inception v1): parallel multi-scale branches with 1x1 bottlenecks.

Lecture concept: the Inception module runs 1x1, 3x3 and 5x5 convolutions and a
3x3 max-pool side by side and concatenates their channels; 1x1 "projection"
convs shrink the channels before the expensive kernels (and after the pool), so
that 22 layers cost 1.5 billion multiply-adds per image. Two auxiliary classifiers on intermediate
stages add their losses, weighted 0.3, during training only.
Reference: Szegedy et al., "Going deeper with convolutions", CVPR 2015 (Table 1
gives the channel counts below); the layout is torchvision's `googlenet`
(pytorch/vision torchvision/models/googlenet.py), which differs from the paper:
  - every conv is conv (no bias) + batch norm (epsilon 1e-3) + relu;
  - the "5x5" branch uses a 3x3 kernel (`branch3_kernel=3`; 5 gives the paper's
    kernel and 7,005,832 parameters without auxiliary heads);
  - no local response normalisation; dropout 0.2 before the classifier (paper 0.4);
  - the auxiliary heads pool adaptively to 4x4 (the paper's 5x5 / 3 pool at 224).

On [batch, 224, 224, 3] with 1,000 classes; max-pools 3x3 / 2 use ceil mode:

  conv 7x7x64 stride 2 pad 3 (9,408 + 128 BN) -> max-pool      224 -> 112 -> 56
  conv 1x1x64 (4,096 + 128) -> conv 3x3x192 (110,592 + 384) -> max-pool   56 -> 28
  inception 3a (155,872), 3b (340,224) -> max-pool              28 -> 14
  inception 4a (364,512), 4b (425,232), 4c (486,192), 4d (573,312), 4e (803,840)
    -> max-pool 2 / 2                                           14 -> 7
  inception 5a (978,944), 5b (1,347,040)                        7
  global average pool -> dropout -> dense 1000 (1,025,000)
  = 6,624,904 parameters without auxiliary heads, as torchvision's.
  Auxiliary heads on 4a (512 channels) and 4d (528): adaptive avg-pool 4x4 ->
  conv 1x1x128 + BN -> flatten 2,048 -> dense 1024 -> relu -> dropout 0.7 ->
  dense 1000: 3,188,968 and 3,191,016 parameters, 13,004,888 in all.

Auxiliary logits: in training (train=True) the model returns the main logits and
`sow`s ("aux_logits" collection) one (weight, logits) pair per head; the tasks'
loss (deeplearn.tasks.common) adds weight x cross-entropy of each. In evaluation
the heads are not computed. Their parameters are created at init in either mode.
"""

import jax.numpy as jnp
import flax.linen as nn

from deeplearn.models.registry import register
from deeplearn.models import resnet
from deeplearn.models.layers import Dense, default_kernel_init, logical_init
from deeplearn.models.pooling import adaptive_avg_pool, max_pool_ceil

# Paper Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)
MODULES = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}
AUX_AFTER = ("4a", "4d")


def ConvBN(features, kernel=1, strides=1, bn_axis_name=None, dtype=jnp.float32,  # noqa: N802
           **kw):
  """torchvision's BasicConv2d: conv (no bias, padding k // 2) -> BN (eps 1e-3)
  -> relu, LeCun-normal kernels: resnet's ConvBN with GoogLeNet's settings."""
  return resnet.ConvBN(features, kernel, strides, bn_axis_name=bn_axis_name,
                       dtype=dtype, epsilon=1e-3, kernel_init=default_kernel_init,
                       **kw)


class Inception(nn.Module):
  """Four branches concatenated on channels: 1x1 | 1x1 -> 3x3 | 1x1 -> k x k |
  max-pool 3x3 / 1 -> 1x1. `channels` is a row of MODULES."""
  channels: tuple[int, ...]
  branch3_kernel: int = 3
  bn_axis_name: str | tuple[str, ...] | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda f, k=1: ConvBN(f, k, bn_axis_name=self.bn_axis_name,  # noqa: E731
                                 dtype=self.dtype)
    c1, c3r, c3, c5r, c5, cp = self.channels
    branches = [
        conv(c1)(x, train),
        conv(c3, 3)(conv(c3r)(x, train), train),
        conv(c5, self.branch3_kernel)(conv(c5r)(x, train), train),
        conv(cp)(nn.max_pool(x, (3, 3), strides=(1, 1), padding="SAME"), train),
    ]
    return jnp.concatenate(branches, axis=-1)  # [batch, H, W, c1 + c3 + c5 + cp]


class AuxHead(nn.Module):
  """An auxiliary classifier: [batch, H, W, C] -> [batch, num_classes] float32."""
  num_classes: int
  dropout_rate: float = 0.7
  bn_axis_name: str | tuple[str, ...] | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = adaptive_avg_pool(x, (4, 4))
    x = ConvBN(128, bn_axis_name=self.bn_axis_name, dtype=self.dtype)(x, train)
    x = x.reshape(x.shape[0], -1)  # [batch, 2048]
    x = nn.relu(Dense(1024, dtype=self.dtype, **logical_init("embed", "mlp"))(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = Dense(self.num_classes, dtype=self.dtype, **logical_init("mlp", "vocab"))(x)
    return x.astype(jnp.float32)


@register("googlenet")
class GoogLeNet(nn.Module):
  """inputs: [batch, H, W, C] images, H, W >= 15. Returns [batch, num_classes].

  aux_heads: build the two auxiliary classifiers (their logits are sown in
    training, see the module docstring); False gives torchvision's
    aux_logits=False model.
  aux_weight: the weight of each auxiliary loss (0.3 in the paper).
  branch3_kernel: kernel of the "5x5" branch: 3 as torchvision, 5 as the paper.
  dropout_rate: before the classifier; aux_dropout_rate: in the auxiliary heads.
  bn_axis_name: axes the batch statistics are averaged over, set by the explicit
    data-parallel steps; leave it None in configs (see ConvNet).
  """
  num_classes: int = 1000
  aux_heads: bool = True
  aux_weight: float = 0.3
  branch3_kernel: int = 3
  dropout_rate: float = 0.2
  aux_dropout_rate: float = 0.7
  bn_axis_name: str | tuple[str, ...] | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    x = ConvBN(64, 7, 2, self.bn_axis_name, self.dtype, in_axis=None, name="conv1")(inputs, train)
    x = max_pool_ceil(x, 3, 2)
    x = ConvBN(64, 1, 1, self.bn_axis_name, self.dtype, name="conv2")(x, train)
    x = ConvBN(192, 3, 1, self.bn_axis_name, self.dtype, name="conv3")(x, train)
    x = max_pool_ceil(x, 3, 2)
    for name, channels in MODULES.items():
      if name in ("4a", "5a"):  # a pool between stages 3-4 and 4-5
        x = max_pool_ceil(x, 3, 2) if name == "4a" else max_pool_ceil(x, 2, 2)
      x = Inception(channels, self.branch3_kernel, self.bn_axis_name, self.dtype,
                    name=f"inception{name}")(x, train)
      # The heads run in training only; at init also in eval mode, so that the
      # variables are the same whichever mode `init` is called in.
      if name in AUX_AFTER and self.aux_heads and (train or self.is_initializing()):
        aux = AuxHead(self.num_classes, self.aux_dropout_rate, self.bn_axis_name, self.dtype,
                      name=f"aux_head{AUX_AFTER.index(name) + 1}")(x, train)
        if train and not self.is_initializing():  # init must not return the sown logits
          self.sow("aux_logits", f"aux{AUX_AFTER.index(name) + 1}",
                   (jnp.float32(self.aux_weight), aux))
    x = x.mean(axis=(1, 2))  # [batch, 1024]
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = Dense(self.num_classes, dtype=self.dtype, **logical_init("embed", "vocab"))(x)
    return logits.astype(jnp.float32)  # [batch, num_classes]; float32 for a stable softmax
