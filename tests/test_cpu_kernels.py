"""The CPU forms of deeplearn.models.layers: im2col convolutions and 2-D dense products
equal lax's, values and gradients, and the dispatch picks them only where meant to."""

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


DOTS = [  # lhs shape, rhs shape, dimension numbers
    ((3, 4, 5), (5, 6), (((2,), (0,)), ((), ()))),          # Dense on [batch, length, in]
    ((3, 4, 2, 5), (2, 5, 7), (((2, 3), (0, 1)), ((), ()))),  # "blhk,hke->ble"
    ((3, 4, 5), (5, 2, 6), (((2,), (0,)), ((), ()))),        # "ble,ehk->blhk"
    ((3, 4, 5), (9, 5), (((2,), (1,)), ((), ()))),           # tied embeddings' attend
    ((3, 5), (5, 6), (((1,), (0,)), ((), ()))),              # 2-D already
    ((2, 3, 5), (2, 5, 4), (((2,), (1,)), ((0,), (0,)))),    # batched: left to lax
]


@pytest.mark.parametrize("lhs_shape,rhs_shape,dims", DOTS)
def test_dot_general_equals_lax(lhs_shape, rhs_shape, dims, monkeypatch):
  monkeypatch.setenv(layers.DOT_IMPL_ENV, "2d")
  rng = np.random.default_rng(0)
  lhs = jnp.asarray(rng.standard_normal(lhs_shape), jnp.float32)
  rhs = jnp.asarray(rng.standard_normal(rhs_shape), jnp.float32)
  ref = lambda a, b: lax.dot_general(a, b, dims)  # noqa: E731
  ours = lambda a, b: layers.dot_general(a, b, dims)  # noqa: E731
  np.testing.assert_allclose(ours(lhs, rhs), ref(lhs, rhs), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda a, b: jnp.sum(jnp.sin(f(a, b)))  # noqa: E731
  for g_ours, g_ref in zip(jax.grad(loss(ours), (0, 1))(lhs, rhs),
                           jax.grad(loss(ref), (0, 1))(lhs, rhs)):
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-5)


def _dot_operand_ranks(impl, monkeypatch):
  monkeypatch.setenv(layers.DOT_IMPL_ENV, impl)
  module = layers.Dense(6)
  x = jnp.ones((3, 4, 5))
  params = module.init(jax.random.key(0), x)
  jaxpr = jax.make_jaxpr(lambda p: module.apply(p, x))(params).jaxpr
  return [eqn.invars[0].aval.ndim for eqn in jaxpr.eqns if eqn.primitive.name == "dot_general"]


def test_dense_dispatch(monkeypatch):
  assert _dot_operand_ranks("auto", monkeypatch) == [2]  # CPU: one 2-D matmul
  assert _dot_operand_ranks("xla", monkeypatch) == [3]
  with pytest.raises(ValueError, match="DEEPLEARN_DOT_IMPL"):
    _dot_operand_ranks("fast", monkeypatch)
  # Same parameters as nn.Dense, so checkpoints move between them.
  monkeypatch.setenv(layers.DOT_IMPL_ENV, "auto")
  x = jnp.ones((3, 4, 5))
  assert (jax.tree.map(jnp.shape, layers.Dense(6).init(jax.random.key(0), x))
          == jax.tree.map(jnp.shape, nn.Dense(6).init(jax.random.key(0), x)))
