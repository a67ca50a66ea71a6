"""The CPU forms of deeplearn.models.layers: im2col convolutions and 2-D dense products
equal lax's, values and gradients, and the dispatch picks them only where meant to:
as config.kernels says (recorded in the run's config.json), or its environment
variables, which override it."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from deeplearn import config as config_lib, step as step_lib, train
from deeplearn.models import layers
from deeplearn.schemes import supervised

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
  """The tests choose through config.kernels; the environment of the shell that
  runs them (a benchmark's $DEEPLEARN_CONV_IMPL) must not choose for them."""
  for env in layers.KERNEL_ENVS.values():
    monkeypatch.delenv(env, raising=False)

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


def _uses_lax_conv(impl, padding, kernel=(5, 5)):
  module = layers.Conv(8, kernel, padding=padding)
  x = jnp.ones((2, 12, 12, 3))
  params = module.init(jax.random.key(0), x)
  with layers.Kernels({"conv": impl}):
    jaxpr = jax.make_jaxpr(lambda p: module.apply(p, x))(params)
  return "conv_general_dilated" in str(jaxpr)


def test_dispatch():
  assert jax.default_backend() == "cpu"
  # auto on CPU: im2col for unpadded convolutions (1x1 SAME is unpadded), XLA's for padded.
  assert not _uses_lax_conv("auto", "VALID")
  assert not _uses_lax_conv("auto", "SAME", kernel=(1, 1))
  assert _uses_lax_conv("auto", "SAME")
  assert _uses_lax_conv("xla", "VALID")
  assert not _uses_lax_conv("im2col", "SAME")
  with pytest.raises(ValueError, match=r"config.kernels.conv='fast'.*'im2col'"):
    _uses_lax_conv("fast", "VALID")


def _step_convolves(kernels):
  """Whether a MeshStep (what every step form is) built with `kernels` lowers
  a padded convolution and its gradients to XLA convolutions."""
  module = layers.Conv(8, (3, 3), padding="SAME")
  x = jnp.ones((2, 12, 12, 3))
  params = module.init(jax.random.key(0), x)
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  replicated = NamedSharding(mesh, P())

  def grads(params, x):  # a new function each call: jax caches traces by function
    return jax.grad(lambda p: jnp.sum(module.apply(p, x) ** 2))(params)

  step = step_lib.jit_step(grads, mesh, (replicated, replicated), donate=False,
                           kernels=kernels)
  return "convolution" in step.lower(params, x).as_text()


def test_config_kernels_choose_the_form_where_the_step_traces(monkeypatch):
  assert _step_convolves({"conv": "auto"})  # padded: XLA's own on CPU
  assert _step_convolves({"conv": "xla"})
  assert not _step_convolves({"conv": "im2col"})
  assert _step_convolves(None)  # a step given no choice: "auto"
  # No choice outlives its step: outside one, the layers are "auto" again.
  assert layers.conv_impl() == "auto" and layers.dot_impl() == "2d"
  # The environment variable wins over the config, and the run's line says so.
  monkeypatch.setenv(layers.CONV_IMPL_ENV, "xla")
  assert _step_convolves({"conv": "im2col"})
  assert layers.describe_kernels({"conv": "im2col", "dot": "xla"}) == (
      "kernels conv=xla ($DEEPLEARN_CONV_IMPL overrides config.kernels.conv='im2col')"
      " dot=xla")
  monkeypatch.setenv(layers.CONV_IMPL_ENV, "im2col")
  assert not _step_convolves({"conv": "xla"})
  monkeypatch.setenv(layers.CONV_IMPL_ENV, "fast")
  with pytest.raises(ValueError, match=r"\$DEEPLEARN_CONV_IMPL='fast'.*'im2col'"):
    _step_convolves({"conv": "auto"})


def test_describe_resolves_auto():
  assert layers.describe_kernels(config_lib.default_config().kernels) == (
      "kernels conv=im2col(unpadded)/xla(padded) dot=2d")
  assert layers.describe_kernels({"conv": "im2col", "dot": "xla"}) == (
      "kernels conv=im2col dot=xla")


def tiny_config(data_dir, **kernels):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny"))
  config.data.data_dir = data_dir
  config.train.progress = False
  config.kernels.update(kernels)
  return config


@pytest.mark.parametrize("key,value,choices", [
    ("conv", "im2cl", r"did you mean 'im2col'\? use one of \('auto', 'xla', 'im2col'\)"),
    ("dot", "3d", r"use one of \('auto', 'xla', '2d'\)"),
])
def test_bad_kernel_fails_before_compiling(key, value, choices):
  config = tiny_config("/nonexistent", **{key: value})  # fails before the data too
  with pytest.raises(ValueError, match=rf"config.kernels.{key}={value!r} is not a form; {choices}"):
    supervised.build(config)


def test_run_records_and_prints_its_kernels(tfds_data_dir, tmp_path, capsys):
  """config.kernels selects the form in the run's own step, lands in
  config.json and is printed, resolved, at the start; a resume may change it."""
  config = tiny_config(tfds_data_dir)
  devices = jax.devices()[:1]
  for conv, convolves in (("im2col", False), ("auto", True)):  # MNIST-1D's convs are padded
    config.kernels.conv = conv
    scheme = supervised.Supervised(config, devices)
    batch = scheme.next_input(scheme.inputs())
    text = scheme.train_step.lower(scheme.init_state(), batch).as_text()
    assert ("convolution" in text) == convolves, conv
  config.kernels.conv = "im2col"
  config.train.update(num_steps=2, log_every=1, eval_every=2, checkpoint_every=2)
  train.train_and_evaluate(config, str(tmp_path), devices=devices)
  with open(tmp_path / "config.json") as f:
    stored = f.read()
  assert json.loads(stored)["kernels"] == {"conv": "im2col", "dot": "auto"}
  assert "| kernels conv=im2col dot=2d" in capsys.readouterr().out
  config.kernels.conv = "xla"  # the same function, other rounding: resume-safe
  assert config_lib.check_resume(config_lib.from_json(stored), config) == [
      "config.kernels.conv: 'im2col' -> 'xla'"]


def test_conv_module_matches_flax():
  """Same parameter tree and outputs as nn.Conv, so checkpoints move between them."""
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 9, 9, 3)), jnp.float32)
  ours = layers.Conv(8, (3, 3), strides=2)
  variables = ours.init(jax.random.key(0), x)
  flax_variables = nn.Conv(8, (3, 3), strides=2).init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, flax_variables)
  with layers.Kernels({"conv": "im2col"}):
    ours_out = ours.apply(variables, x)
  np.testing.assert_allclose(ours_out, nn.Conv(8, (3, 3), strides=2).apply(variables, x),
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
def test_dot_general_equals_lax(lhs_shape, rhs_shape, dims):
  rng = np.random.default_rng(0)
  lhs = jnp.asarray(rng.standard_normal(lhs_shape), jnp.float32)
  rhs = jnp.asarray(rng.standard_normal(rhs_shape), jnp.float32)
  ref = lambda a, b: lax.dot_general(a, b, dims)  # noqa: E731

  def ours(a, b):
    with layers.Kernels({"dot": "2d"}):
      return layers.dot_general(a, b, dims)
  np.testing.assert_allclose(ours(lhs, rhs), ref(lhs, rhs), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda a, b: jnp.sum(jnp.sin(f(a, b)))  # noqa: E731
  for g_ours, g_ref in zip(jax.grad(loss(ours), (0, 1))(lhs, rhs),
                           jax.grad(loss(ref), (0, 1))(lhs, rhs)):
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-5)


def _dot_operand_ranks(impl):
  module = layers.Dense(6)
  x = jnp.ones((3, 4, 5))
  params = module.init(jax.random.key(0), x)
  with layers.Kernels({"dot": impl}):
    jaxpr = jax.make_jaxpr(lambda p: module.apply(p, x))(params).jaxpr
  return [eqn.invars[0].aval.ndim for eqn in jaxpr.eqns if eqn.primitive.name == "dot_general"]


def test_dense_dispatch(monkeypatch):
  assert _dot_operand_ranks("auto") == [2]  # CPU: one 2-D matmul
  assert _dot_operand_ranks("xla") == [3]
  with pytest.raises(ValueError, match="config.kernels.dot='fast'"):
    _dot_operand_ranks("fast")
  monkeypatch.setenv(layers.DOT_IMPL_ENV, "xla")  # the environment overrides
  assert _dot_operand_ranks("2d") == [3]
  monkeypatch.setenv(layers.DOT_IMPL_ENV, "fast")
  with pytest.raises(ValueError, match="DEEPLEARN_DOT_IMPL='fast'"):
    _dot_operand_ranks("auto")
  # Same parameters as nn.Dense, so checkpoints move between them.
  monkeypatch.delenv(layers.DOT_IMPL_ENV)
  x = jnp.ones((3, 4, 5))
  assert (jax.tree.map(jnp.shape, layers.Dense(6).init(jax.random.key(0), x))
          == jax.tree.map(jnp.shape, nn.Dense(6).init(jax.random.key(0), x)))
