"""Pieces shared by the model families: logically named initialisers, initialisers
by name, PyTorch's default initialiser (to replicate PyTorch reference models) and the
activation lookup.

Logical axis names (`embed`, `mlp`, `vocab`, `conv_in`, `conv_out`, ...) are attached
to parameters at init time; an experiment's sharding rules map them to mesh axes
(see ARCHITECTURE.md, "Sharding is data, not code", and the rule tables in
deeplearn/config.py). Narrow names (`embed`, `conv_in`) are axes a layer reads
whole; wide ones (`mlp`, `heads`, `conv_out`) are those that tensor parallelism
splits; consecutive layers alternate the two.
"""

import re

import jax
import jax.numpy as jnp
import flax.linen as nn

from deeplearn.config import did_you_mean

default_kernel_init = nn.initializers.lecun_normal()

# Kernel initialisers a model's `kernel_init` field may name. Lecture concept:
# a layer's output variance is fan_in * Var(w) * E[x^2], so scaling the
# weights' variance by 1 / fan_in keeps activations O(1) through any depth
# (LeCun et al., "Efficient BackProp", 1998); relu halves E[x^2], hence He et
# al.'s 2 / fan_in (ICCV 2015); Glorot & Bengio (AISTATS 2010) average fan_in
# and fan_out. "normal(0.01)" is a fixed scale, blind to the width: the
# activations shrink (or grow) geometrically with depth.
KERNEL_INITS = {
    "lecun_normal": default_kernel_init,
    "he_normal": nn.initializers.he_normal(),
    "glorot_normal": nn.initializers.glorot_normal(),
    "glorot_uniform": nn.initializers.glorot_uniform(),
}
_FIXED = re.compile(r"normal\(\s*([0-9.eE+-]+)\s*\)")


def logical_init(*axes, kernel_init=default_kernel_init, bias_init=nn.initializers.zeros_init()):
  """`kernel_init` / `bias_init` keyword arguments for nn.Dense or nn.Conv whose kernel
  has logical axes `axes`; the bias is named after the kernel's output axis.

    nn.Dense(200, **logical_init("embed", "mlp"))
    nn.Conv(32, (5, 5), **logical_init(None, None, "conv_in", "conv_out"))
  """
  return dict(kernel_init=nn.with_logical_partitioning(kernel_init, axes),
              bias_init=nn.with_logical_partitioning(bias_init, axes[-1:]))


def kernel_initializer(name: str, scale: float = 1.0):
  """The initialiser `name` (a key of KERNEL_INITS, or "normal(STD)": N(0, STD^2)
  whatever the fan-in), its draws multiplied by `scale`.

  A `scale` below 1 on the classifier is the "small last layer": near-equal
  logits, a near-uniform initial softmax (high temperature), a first loss of
  log(num_classes).
  """
  fixed = _FIXED.fullmatch(name.strip())
  if fixed:
    init = nn.initializers.normal(float(fixed.group(1)))
  elif name in KERNEL_INITS:
    init = KERNEL_INITS[name]
  else:
    raise ValueError(f"config.model.kernel_init={name!r} is not an initialiser; "
                     f"{did_you_mean(name, KERNEL_INITS)}use one of {sorted(KERNEL_INITS)}"
                     " or 'normal(STD)', e.g. 'normal(0.01)'.")
  if scale == 1.0:
    return init

  def scaled(key, shape, dtype=jnp.float32):
    return scale * init(key, shape, dtype)

  return scaled


def dense_inits(axes, kernel_init: str = "lecun_normal", bias_init: float = 0.0,
                scale: float = 1.0):
  """logical_init for a layer of a family with the init fields: kernels from
  `kernel_initializer(kernel_init, scale)`, biases the constant `bias_init` (a
  small positive one, e.g. 0.1, keeps relu units active at the start)."""
  return logical_init(*axes, kernel_init=kernel_initializer(kernel_init, scale),
                      bias_init=nn.initializers.constant(bias_init))


def torch_uniform(fan_in: int):
  """PyTorch's default init for Linear, Conv and GRU weights and biases alike:
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)). (kaiming_uniform with a=sqrt(5) reduces to this.)
  Linear/Conv use fan_in = in_features * kernel size; GRU uses fan_in = hidden_size
  for every weight, input weights included."""
  bound = 1.0 / fan_in ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def activation(name: str):
  """An activation function by name, from flax.linen or else jax.nn ("relu", "gelu", ...)."""
  fn = getattr(nn, name, None) or getattr(jax.nn, name, None)
  if not callable(fn) or isinstance(fn, type):
    raise ValueError(f"config.model.activation={name!r} is not a function in flax.linen or jax.nn")
  return fn
