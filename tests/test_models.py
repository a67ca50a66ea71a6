"""Specification of the model families: the contract the train loop and tasks rely on."""

import functools

import jax
import jax.numpy as jnp
import flax.linen as nn
import ml_collections
import numpy as np
import optax
import pytest

from deeplearn import models
from deeplearn.models.convnet import DIGITS, block_max_pool
from deeplearn.models.mnist1d import TorchGRUCell

LOGICAL_AXES = {"embed", "mlp", "vocab", "conv_in", "conv_out", "heads", "kv"}

# (config, input shape, exact parameter count)
FAMILIES = {
    "linear": (dict(name="linear"), (40,), 410),
    "mlp": (dict(name="mlp", hidden_sizes=(100, 100)), (40,), 15_210),
    "convnet_ee559": (dict(name="convnet"), (28, 28, 1), 832 + 51_264 + 51_400 + 2_010),
    "convnet_digits": (dict(name="convnet", **DIGITS), (8, 8, 1), 160 + 4_640 + 8_256 + 650),
    "mnist1d_cnn": (dict(name="mnist1d_cnn"), (40,), 5_210),
    "mnist1d_gru": (dict(name="mnist1d_gru"), (40,), 5_134),
}


def build(cfg, input_shape, batch=4, seed=0):
  model = models.get_model(ml_collections.ConfigDict(cfg))
  x = jax.random.normal(jax.random.key(seed), (batch, *input_shape))
  variables = model.init(jax.random.key(seed + 1), x, train=False)
  return model, variables, x


@functools.cache
def built(family):
  """One initialised model per family, shared by the tests that only read it."""
  cfg, shape, _ = FAMILIES[family]
  return build(cfg, shape)


def test_importing_the_package_registers_every_family():
  assert models.registered() == [
      "alexnet", "autoencoder", "cascade", "convnet", "convnet_maxout", "dcgan_discriminator",
      "dcgan_generator", "early_exit_convnet", "gan_mlp_discriminator", "gan_mlp_generator", "googlenet", "lenet5",
      "linear", "mlp", "mlp_maxout", "mnist1d_cnn", "mnist1d_gru", "ngram_mlp", "resnet",
      "resnet9", "rnn_lm", "seq2seq", "transformer", "two_tower", "vae", "vgg"]


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_are_batch_by_classes_float32(family):
  model, variables, x = built(family)
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (4, 10)
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_count_matches_reference(family):
  _, variables, _ = built(family)
  count = FAMILIES[family][2]
  assert sum(p.size for p in jax.tree.leaves(nn.unbox(variables))) == count


@pytest.mark.parametrize("family", FAMILIES)
def test_every_param_has_logical_axis_names(family):
  _, variables, _ = built(family)
  specs = nn.get_partition_spec(variables)["params"]
  params = nn.unbox(variables)["params"]
  for (path, spec), param in zip(jax.tree_util.tree_flatten_with_path(specs)[0],
                                 jax.tree.leaves(params)):
    names = [n for n in spec if n is not None]
    assert len(spec) == param.ndim, (path, spec)
    assert names and set(names) <= LOGICAL_AXES, (path, spec)
    assert len(names) == len(set(names)), f"{path}: an axis name twice cannot be sharded"


def test_bfloat16_computes_in_bfloat16_with_float32_params():
  model, variables, x = build(dict(name="mlp", dtype="bfloat16"), (40,))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nn.unbox(variables)))
  hidden = model.apply(variables, x, train=False, capture_intermediates=True,
                       mutable=["intermediates"])[1]["intermediates"]["Dense_0"]["__call__"][0]
  assert hidden.dtype == jnp.bfloat16


def test_convnet_accepts_images_without_channel_axis():
  model, variables, x = built("convnet_digits")
  np.testing.assert_array_equal(model.apply(variables, x[..., 0], train=False),
                                model.apply(variables, x, train=False))


@pytest.mark.parametrize("cfg,shape", [
    (dict(name="mlp", dropout_rate=0.5), (40,)),
    (dict(name="convnet", dropout_rate=0.5, **DIGITS), (8, 8, 1)),
])
def test_dropout_is_random_in_train_and_off_in_eval(cfg, shape):
  model, variables, x = build(cfg, shape)
  train = [model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(i)})
           for i in (1, 2)]
  assert not np.allclose(train[0], train[1])
  without_dropout = models.get_model({**cfg, "dropout_rate": 0.0})
  np.testing.assert_array_equal(model.apply(variables, x, train=False),
                                without_dropout.apply(variables, x, train=False))


@pytest.mark.parametrize("shape,window", [
    ((2, 24, 24, 32), 3),  # the EE-559 net's first pool
    ((2, 8, 8, 64), 2),
    ((3, 9, 7, 5), 2),  # remainders dropped, as padding="VALID"
    ((1, 5, 5, 2), 1),
])
def test_block_max_pool_equals_nn_max_pool(shape, window):
  x = jax.random.normal(jax.random.key(0), shape)

  def reference(x):
    return nn.max_pool(x, (window, window), strides=(window, window), padding="VALID")

  np.testing.assert_array_equal(block_max_pool(x, window), reference(x))
  # Without ties (continuous random inputs) the gradients agree too.
  np.testing.assert_array_equal(jax.grad(lambda x: block_max_pool(x, window).sum())(x),
                                jax.grad(lambda x: reference(x).sum())(x))


def test_mlp_residual_follows_mnist1d_reference():
  # MLPBase.forward: h = relu(l1(x)); h = h + relu(l2(h)); return l3(h)
  model, variables, x = build(dict(name="mlp", residual=True), (40,))
  p = nn.unbox(variables)["params"]
  dense = lambda name, h: h @ p[name]["kernel"] + p[name]["bias"]  # noqa: E731
  h = nn.relu(dense("Dense_0", x))
  h = h + nn.relu(dense("Dense_1", h))
  np.testing.assert_allclose(model.apply(variables, x, train=False), dense("Dense_2", h),
                             rtol=1e-5, atol=1e-5)


def test_torch_gru_cell_is_flax_gru_cell_plus_hidden_gate_biases():
  f = 6
  cell = TorchGRUCell(f)
  h0 = jax.random.normal(jax.random.key(0), (4, f))
  x = jax.random.normal(jax.random.key(1), (4, 3))
  p = nn.unbox(cell.init(jax.random.key(2), h0, x))["params"]
  # Zero the two hidden biases nn.GRUCell does not have; the rest maps one to one.
  p["hidden"]["bias"] = p["hidden"]["bias"].at[:2 * f].set(0.0)
  gate = lambda layer, i: {"kernel": layer["kernel"][:, i * f:(i + 1) * f],  # noqa: E731
                           "bias": layer["bias"][i * f:(i + 1) * f]}
  flax_params = {"ir": gate(p["input"], 0), "iz": gate(p["input"], 1), "in": gate(p["input"], 2),
                 "hr": {"kernel": gate(p["hidden"], 0)["kernel"]},
                 "hz": {"kernel": gate(p["hidden"], 1)["kernel"]}, "hn": gate(p["hidden"], 2)}
  ours, _ = cell.apply({"params": p}, h0, x)
  theirs, _ = nn.GRUCell(f).apply({"params": flax_params}, h0, x)
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_unknown_model_name_is_rejected_with_the_choices():
  with pytest.raises(ValueError, match=r"config.model.name='densenet'.*'mlp'"):
    models.get_model(ml_collections.ConfigDict(dict(name="densenet")))


def test_unknown_field_is_rejected_naming_the_key_and_valid_fields():
  with pytest.raises(ValueError, match=r"config.model.hiden_sizes .*'hidden_sizes'"):
    models.get_model(ml_collections.ConfigDict(dict(name="mlp", hiden_sizes=(10,))))


def test_unknown_activation_is_rejected_naming_the_key():
  bad = models.get_model(dict(name="mlp", activation="relux"))
  with pytest.raises(ValueError, match="config.model.activation='relux'"):
    bad.init(jax.random.key(0), jnp.ones((1, 40)), train=False)


def test_list_fields_become_tuples_so_modules_stay_hashable():
  model = models.get_model(dict(name="mlp", hidden_sizes=[8, 8]))
  assert model.hidden_sizes == (8, 8)
  hash(model)


@pytest.mark.parametrize("family", ["linear", "mlp", "mnist1d_cnn", "mnist1d_gru",
                                    "convnet_digits"])
def test_overfits_64_random_examples(family):
  """A few hundred Adam steps memorise 64 random labels: a broken model does not."""
  model, variables, _ = built(family)
  shape = FAMILIES[family][1]
  x = jax.random.normal(jax.random.key(10), (64, *shape))
  y = jax.random.randint(jax.random.key(11), (64,), 0, 10)
  params = nn.unbox(variables)["params"]
  tx = optax.adam(1e-2)

  def loss_fn(params):
    logits = model.apply({"params": params}, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def train(params):
    def step(carry, _):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state)
      return (optax.apply_updates(params, updates), opt_state), loss
    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), length=300)
    return losses

  losses = train(params)
  assert losses[0] > 1.5  # chance level is ln 10 = 2.3
  assert losses[-1] < 0.05, f"final loss {losses[-1]:.3f}"


def test_ngram_lm_is_causal_and_sees_exactly_its_context():
  model = models.get_model(ml_collections.ConfigDict(
      dict(name="ngram_mlp", vocab_size=65, context=3, embed_dim=8, hidden_size=32)))
  tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 65)
  variables = model.init(jax.random.key(1), tokens, train=False)
  logits = model.apply(variables, tokens, train=False)
  assert logits.shape == (2, 16, 65) and logits.dtype == jnp.float32
  # 65 * 8 embeddings + (3 * 8 + 1) * 32 hidden + (32 + 1) * 65 output
  assert sum(p.size for p in jax.tree.leaves(nn.unbox(variables))) == 520 + 800 + 2_145
  changed = model.apply(variables, tokens.at[:, 8].set((tokens[:, 8] + 1) % 65), train=False)
  differs = np.abs(np.asarray(changed - logits)).max(axis=(0, 2)) > 0
  # Token 8 is in the context of positions 8, 9 and 10 only: none before, none after.
  assert differs.tolist() == [t in (8, 9, 10) for t in range(16)]
