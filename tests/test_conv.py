"""layers.conv_general_dilated: im2col equals lax's convolution, values and gradients,
and the dispatch picks im2col only where it is meant to."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn
from jax import lax

from deeplearn.models import layers

CASES = [  # spatial dims, strides, rhs dilation, padding, kernel
    (2, (1, 1), (1, 1), "VALID", (5, 5)),
    (2, (2, 2), (1, 1), "SAME", (3, 3)),
    (2, (2, 1), (2, 1), ((1, 2), (0, 3)), (3, 2)),
    (1, (2,), (1,), ((1, 1),), (5,)),
    (3, (1, 2, 1), (1, 1, 2), "SAME", (2, 3, 2)),
    (2, (1, 1), (1, 1), "SAME", (1, 1)),
    (2, (3, 3), (1, 1), "VALID", (6, 6)),
]


def _flax_dn(nd, x, w):
  spatial = "HWD"[:nd]
  return lax.conv_dimension_numbers(x.shape, w.shape,
                                    (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"))


@pytest.mark.parametrize("nd,strides,dilation,padding,kernel", CASES)
def test_im2col_equals_lax(nd, strides, dilation, padding, kernel):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3,) + (13,) * nd + (4,)), jnp.float32)
  w = jnp.asarray(rng.standard_normal(kernel + (4, 5)), jnp.float32)
  dn = _flax_dn(nd, x, w)

  def ref(x, w):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=dn)

  def ours(x, w):
    return layers.im2col_conv(x, w, strides, padding, dilation)

  np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5, atol=1e-4)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731
  for g_ours, g_ref in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(ref), (0, 1))(x, w)):
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-4, atol=1e-4)


def _uses_lax_conv(impl, padding, monkeypatch, kernel=(5, 5)):
  monkeypatch.setenv(layers.CONV_IMPL_ENV, impl)
  module = layers.Conv(8, kernel, padding=padding)
  x = jnp.ones((2, 12, 12, 3))
  params = module.init(jax.random.key(0), x)
  jaxpr = jax.make_jaxpr(lambda p: module.apply(p, x))(params)
  return "conv_general_dilated" in str(jaxpr)


def test_dispatch(monkeypatch):
  assert jax.default_backend() == "cpu"
  # auto on CPU: im2col for unpadded convolutions (1x1 SAME is unpadded), XLA's for padded.
  assert not _uses_lax_conv("auto", "VALID", monkeypatch)
  assert not _uses_lax_conv("auto", "SAME", monkeypatch, kernel=(1, 1))
  assert _uses_lax_conv("auto", "SAME", monkeypatch)
  assert _uses_lax_conv("xla", "VALID", monkeypatch)
  assert not _uses_lax_conv("im2col", "SAME", monkeypatch)
  with pytest.raises(ValueError, match="DEEPLEARN_CONV_IMPL"):
    _uses_lax_conv("fast", "VALID", monkeypatch)


def test_conv_module_matches_flax(monkeypatch):
  """Same parameter tree and outputs as nn.Conv, so checkpoints move between them."""
  monkeypatch.setenv(layers.CONV_IMPL_ENV, "im2col")
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 9, 9, 3)), jnp.float32)
  ours = layers.Conv(8, (3, 3), strides=2)
  variables = ours.init(jax.random.key(0), x)
  flax_variables = nn.Conv(8, (3, 3), strides=2).init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, flax_variables)
  np.testing.assert_allclose(ours.apply(variables, x),
                             nn.Conv(8, (3, 3), strides=2).apply(variables, x),
                             rtol=1e-5, atol=1e-5)
