"""Pieces shared by the model families: logically named initialisers, PyTorch's
default initialiser (to replicate PyTorch reference models) and the activation lookup.

Logical axis names (`embed`, `mlp`, `vocab`, `conv_in`, `conv_out`, ...) are attached
to parameters at init time; an experiment's sharding rules map them to mesh axes
(see ARCHITECTURE.md, "Sharding is data, not code", and the rule tables in
deeplearn/config.py). Narrow names (`embed`, `conv_in`) are axes a layer reads
whole; wide ones (`mlp`, `heads`, `conv_out`) are those that tensor parallelism
splits; consecutive layers alternate the two.
"""

import jax
import jax.numpy as jnp
import flax.linen as nn

default_kernel_init = nn.initializers.lecun_normal()


def logical_init(*axes, kernel_init=default_kernel_init, bias_init=nn.initializers.zeros_init()):
  """`kernel_init` / `bias_init` keyword arguments for nn.Dense or nn.Conv whose kernel
  has logical axes `axes`; the bias is named after the kernel's output axis.

    nn.Dense(200, **logical_init("embed", "mlp"))
    nn.Conv(32, (5, 5), **logical_init(None, None, "conv_in", "conv_out"))
  """
  return dict(kernel_init=nn.with_logical_partitioning(kernel_init, axes),
              bias_init=nn.with_logical_partitioning(bias_init, axes[-1:]))


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
