"""Initialisation options: fan-in scaled kernels keep activations O(1) through depth,
a fixed scale makes them vanish or explode; small positive biases and a small last
layer do what the lectures say."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from deeplearn import models

WIDTH = 256


def build(x, **fields):
  model = models.get_model(ml_collections.ConfigDict(dict(name="mlp", **fields)))
  variables = nn.unbox(model.init(jax.random.key(1), x, train=False))
  logits, state = model.apply(variables, x, train=False, capture_intermediates=True)
  # Each hidden Dense's output (the pre-activations), layer by layer.
  hidden = [state["intermediates"][f"Dense_{i}"]["__call__"][0]
            for i in range(len(fields["hidden_sizes"]))]
  return variables["params"], logits, hidden


def layer_stds(depth, activation, kernel_init):
  x = jax.random.normal(jax.random.key(0), (512, WIDTH))  # unit-scale inputs
  _, _, hidden = build(x, hidden_sizes=(WIDTH,) * depth, activation=activation,
                       kernel_init=kernel_init)
  return np.array([float(jnp.std(h)) for h in hidden])


def test_he_init_keeps_a_50_layer_relu_stack_at_unit_scale_and_fixed_scales_do_not():
  stds = layer_stds(50, "relu", "he_normal")  # Var(w) = 2 / fan_in
  assert ((stds > 0.2) & (stds < 5)).all(), stds
  # A fixed N(0, 0.01^2): each layer multiplies the scale by 0.01 * sqrt(256 / 2).
  assert layer_stds(50, "relu", "normal(0.01)")[-1] < 1e-3
  # N(0, 0.2^2): by 0.2 * sqrt(256 / 2) = 2.3 a layer, 1e17 after 50.
  assert layer_stds(50, "relu", "normal(0.2)")[-1] > 1e3
  # LeCun's 1 / fan_in ignores that relu zeroes half its inputs: the variance
  # halves every layer, 2^-25 in std after 50.
  assert layer_stds(50, "relu", "lecun_normal")[-1] < 1e-3


def test_lecun_init_keeps_a_30_layer_tanh_stack_order_one_and_fixed_scales_do_not():
  stds = layer_stds(30, "tanh", "lecun_normal")
  # At Var(w) = 1 / fan_in tanh is critical: the scale decays only as a power
  # of the depth (0.14 after 30 layers), never geometrically.
  assert ((stds > 0.1) & (stds < 5)).all(), stds
  assert layer_stds(30, "tanh", "normal(0.01)")[-1] < 1e-3
  # N(0, 1) saturates every unit: pre-activations of std ~16, tanh's
  # gradient there is ~0.
  assert (layer_stds(30, "tanh", "normal(1.0)")[1:] > 10).all()


def test_small_positive_bias_starts_more_relu_units_active_and_spares_the_classifier():
  x = jax.random.normal(jax.random.key(0), (512, 64))
  fields = dict(hidden_sizes=(64,) * 8, kernel_init="he_normal")
  params0, _, hidden0 = build(x, **fields)
  params, _, hidden = build(x, bias_init=0.1, **fields)
  for i in range(8):
    np.testing.assert_array_equal(params[f"Dense_{i}"]["kernel"], params0[f"Dense_{i}"]["kernel"])
    np.testing.assert_array_equal(params[f"Dense_{i}"]["bias"], np.float32(0.1))
    assert (hidden[i] > 0).mean() > (hidden0[i] > 0).mean()
  np.testing.assert_array_equal(params["Dense_8"]["bias"], 0.0)


def entropy(logits):
  p = jax.nn.softmax(logits)
  return float(-(p * jax.nn.log_softmax(logits)).sum(-1).mean())


def test_small_last_layer_starts_from_a_near_uniform_softmax():
  x = jax.random.normal(jax.random.key(0), (512, 64))
  labels = jax.random.randint(jax.random.key(2), (512,), 0, 10)
  _, default, _ = build(x, hidden_sizes=(100, 100))
  params, small, _ = build(x, hidden_sizes=(100, 100), last_layer_scale=0.01)
  params0, _, _ = build(x, hidden_sizes=(100, 100))
  np.testing.assert_allclose(params["Dense_2"]["kernel"], 0.01 * params0["Dense_2"]["kernel"],
                             rtol=1e-6)
  assert abs(entropy(small) - np.log(10)) < 1e-4
  assert entropy(default) < np.log(10) - 0.05
  loss = optax.softmax_cross_entropy_with_integer_labels(small, labels).mean()
  assert abs(float(loss) - np.log(10)) < 1e-3


@pytest.mark.parametrize("family,shape,classifier,num_hidden", [
    (dict(name="convnet", features=(8, 8), kernel_size=3, pools=(2, 2), padding="SAME",
          hidden_sizes=(16,), bias_init=0.1), (8, 8, 1), "Dense_1", 3),
    (dict(name="mlp_maxout", hidden_sizes=(16, 16), pieces=2), (64,), "Dense_0", 2),
])
def test_the_convnet_and_maxout_families_take_the_init_options(family, shape, classifier,
                                                               num_hidden):
  x = jax.random.normal(jax.random.key(0), (4, *shape))
  model = models.get_model(ml_collections.ConfigDict(dict(
      family, kernel_init="normal(0.5)", last_layer_scale=0.0)))
  params = nn.unbox(model.init(jax.random.key(1), x, train=False))["params"]
  layers = {jax.tree_util.keystr(path[:-1]): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if jax.tree_util.keystr(path[-1:]) == "['kernel']"}
  last = layers.pop(f"['{classifier}']")
  np.testing.assert_array_equal(last, 0.0)
  assert len(layers) == num_hidden
  for kernel in layers.values():  # a fixed std, whatever the fan-in
    assert 0.4 < float(jnp.std(kernel)) < 0.6
  if "bias_init" in family:
    for name in layers:
      np.testing.assert_array_equal(params[name[2:-2]]["bias"], np.float32(0.1))
  np.testing.assert_array_equal(model.apply({"params": params}, x, train=False), 0.0)


def test_unknown_initialiser_is_rejected_naming_the_key_and_the_choices():
  model = models.get_model(ml_collections.ConfigDict(dict(name="mlp", kernel_init="he_norml")))
  with pytest.raises(ValueError, match=r"config\.model\.kernel_init.*he_normal.*normal\(STD\)"):
    model.init(jax.random.key(0), jnp.zeros((1, 4)), train=False)
