"""Specification of the vision model zoo: LeNet-5, AlexNet, VGG, GoogLeNet, ResNet,
ResNet-9 and maxout networks.

Parameter counts are taken at the published sizes through `jax.eval_shape` (no
weights are allocated); forward passes run narrow variants on small images.
"""

import functools
import types

import jax
import jax.numpy as jnp
import flax.linen as nn
import ml_collections
import numpy as np
import optax
import pytest

from deeplearn import models
from deeplearn.models.maxout import Maxout
from deeplearn.tasks.classification import Classification

IMAGENET = (224, 224, 3)
LOGICAL_AXES = {"embed", "mlp", "vocab", "conv_in", "conv_out"}

# (config, input shape, exact parameter count). The ImageNet counts are
# torchvision's (1,000 classes); LeNet-5 is the PyTorch "Neural Networks"
# tutorial's net; ResNet-9 is the sum of dawn.py's layers; the maxout ones are
# k = 5 (MLP, the paper's MNIST net) and k = 2 (the EE-559 convnet) times the
# linear layers they replace.
REFERENCE = {
    "lenet5": (dict(name="lenet5"), (32, 32, 1), 61_706),
    "lenet5_mnist_padded": (dict(name="lenet5", padding=2), (28, 28, 1), 61_706),
    "alexnet": (dict(name="alexnet"), IMAGENET, 61_100_840),
    "vgg11": (dict(name="vgg", depth=11), IMAGENET, 132_863_336),
    "vgg16": (dict(name="vgg", depth=16), IMAGENET, 138_357_544),
    "googlenet_without_aux": (dict(name="googlenet", aux_heads=False), IMAGENET, 6_624_904),
    "resnet18": (dict(name="resnet", depth=18), IMAGENET, 11_689_512),
    "resnet34": (dict(name="resnet", depth=34), IMAGENET, 21_797_672),
    "resnet50": (dict(name="resnet", depth=50), IMAGENET, 25_557_032),
    "resnet9": (dict(name="resnet9"), (32, 32, 3), 6_573_120),
    "mlp_maxout": (dict(name="mlp_maxout"), (784,), 5 * (785 * 240 + 241 * 240) + 2_410),
    "convnet_maxout": (dict(name="convnet_maxout"), (28, 28, 1),
                       2 * (832 + 51_264 + 51_400) + 2_010),
}

# Narrow variants on the smallest convenient images, for forward passes. (GoogLeNet
# has its own tests below: its compilations are the slowest, so they are shared.)
SMALL = {
    "lenet5": (dict(name="lenet5"), (32, 32, 1)),
    "alexnet": (dict(name="alexnet", num_classes=10, width=8, hidden_size=32),
                (64, 64, 3)),  # >= 63x63
    "vgg11_bn": (dict(name="vgg", num_classes=10, depth=11, width=8, hidden_size=32,
                      batch_norm=True), (32, 32, 3)),
    "resnet18": (dict(name="resnet", num_classes=10, depth=18, width=8), (32, 32, 3)),
    "resnet50_bf16": (dict(name="resnet", num_classes=10, depth=50, width=8,
                           dtype="bfloat16"), (32, 32, 3)),
    "resnet9": (dict(name="resnet9", width=8), (32, 32, 3)),
    "mlp_maxout": (dict(name="mlp_maxout", hidden_sizes=(16, 16)), (784,)),
    "convnet_maxout": (dict(name="convnet_maxout"), (28, 28, 1)),
}
DROPOUT_RNG = jax.random.key(2)


def get_model(cfg, **overrides):
  return models.get_model(ml_collections.ConfigDict({**cfg, **overrides}))


def abstract_variables(cfg, input_shape):
  model = get_model(cfg)
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def random_variables(model, x, seed=0):
  """Variables shaped as `model.init` makes them, drawn with numpy: LeCun-normal
  kernels, zero biases, BN as initialised. (Compiling GoogLeNet's random
  initialisers alone took 36 s on the shared 2-core CPU.)"""
  abstract = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False)))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if name in ("['scale']", "['var']"):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name in ("['bias']", "['mean']"):
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


@functools.cache
def built(family):
  cfg, shape = SMALL[family]
  model = get_model(cfg)
  x = jax.random.normal(jax.random.key(0), (2, *shape))
  return model, random_variables(model, x), x


@functools.cache
def forward(family):
  """Eval logits, train logits and the train step's collections, in one compilation."""
  model, variables, x = built(family)
  mutable = [k for k in variables if k != "params"] + ["aux_logits"]

  @jax.jit
  def run(variables, x):
    train, collections = model.apply(variables, x, train=True, rngs={"dropout": DROPOUT_RNG},
                                     mutable=mutable)
    return model.apply(variables, x, train=False), train, collections

  return run(variables, x)


def test_importing_the_package_registers_the_vision_families():
  assert {"alexnet", "convnet_maxout", "googlenet", "lenet5", "mlp_maxout", "resnet",
          "resnet9", "vgg"} <= set(models.registered())


@pytest.mark.parametrize("family", REFERENCE)
def test_parameter_count_matches_reference(family):
  cfg, shape, count = REFERENCE[family]
  params = nn.unbox(abstract_variables(cfg, shape)["params"])
  assert sum(p.size for p in jax.tree.leaves(params)) == count


@pytest.mark.parametrize("family", ["alexnet", "vgg16", "googlenet_without_aux", "resnet50",
                                    "resnet9", "lenet5", "mlp_maxout", "convnet_maxout"])
def test_every_param_has_logical_axis_names(family):
  cfg, shape, _ = REFERENCE[family]
  variables = abstract_variables(cfg, shape)
  specs = nn.get_partition_spec(variables)["params"]
  params = nn.unbox(variables)["params"]
  for (path, spec), param in zip(jax.tree_util.tree_flatten_with_path(specs)[0],
                                 jax.tree.leaves(params)):
    names = [n for n in spec if n is not None]
    assert len(spec) == param.ndim, (path, spec)
    assert names and set(names) <= LOGICAL_AXES, (path, spec)
    assert len(names) == len(set(names)), f"{path}: an axis name twice cannot be sharded"
    if param.ndim == 4 and param.shape[2] in (1, 3):  # a first conv, on the image
      assert spec[2] is None, f"{path}: an image's {param.shape[2]} channels cannot be split"


def test_batch_norm_scale_and_bias_are_params_running_statistics_are_state():
  # As torchvision counts them: BN weight and bias are parameters, the running
  # mean and var buffers (here the batch_stats collection) are not.
  variables = abstract_variables(*REFERENCE["resnet50"][:2])
  bn_params = sum(p.size for path, p in jax.tree_util.tree_flatten_with_path(
      nn.unbox(variables["params"]))[0] if "BatchNorm" in jax.tree_util.keystr(path))
  stats = sum(p.size for p in jax.tree.leaves(variables["batch_stats"]))
  assert stats == bn_params > 0  # mean and var per channel, like scale and bias


@pytest.mark.parametrize("family", SMALL)
def test_logits_are_batch_by_classes_float32_in_train_and_eval(family):
  eval_logits, train_logits, _ = forward(family)
  for logits in (eval_logits, train_logits):
    assert logits.shape == (2, 10)
    assert logits.dtype == jnp.float32
    assert np.isfinite(logits).all()


def test_bfloat16_resnet_keeps_float32_params():
  _, variables, _ = built("resnet50_bf16")
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("cfg,shape", [
    (dict(name="alexnet", width=8, hidden_size=32), (62, 62, 3)),
    (dict(name="vgg", depth=11, width=8, hidden_size=32), (31, 31, 3)),
    (dict(name="googlenet"), (14, 14, 3)),
])
def test_too_small_images_are_rejected_before_they_give_nan(cfg, shape):
  model = get_model(cfg)
  with pytest.raises(ValueError, match="too small|at least"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False))


@pytest.mark.parametrize("family", ["alexnet", "mlp_maxout", "convnet_maxout"])
def test_dropout_is_random_in_train_and_off_in_eval(family):
  cfg, _ = SMALL[family]
  _, variables, x = built(family)
  model, without_dropout = get_model(cfg, dropout_rate=0.5), get_model(cfg, dropout_rate=0.0)

  @jax.jit
  def run(variables):
    train = [model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(i)})
             for i in (1, 2)]
    return (train, model.apply(variables, x, train=False),
            without_dropout.apply(variables, x, train=False))

  train, dropout_eval, plain_eval = run(variables)
  assert not np.allclose(train[0], train[1])
  np.testing.assert_array_equal(dropout_eval, plain_eval)


def test_resnet_training_updates_batch_statistics():
  _, variables, _ = built("resnet18")
  _, _, new = forward("resnet18")
  before, after = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(new["batch_stats"])
  assert len(before) == len(after) and all(not np.allclose(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("module", [
    models.resnet.ResNet9(width=4),  # resnet.ConvBN, shared with the ImageNet ResNets
    models.inception.ConvBN(4, 3),  # GoogLeNet's conv + BN
], ids=["resnet9", "googlenet_conv_bn"])
def test_batch_norm_with_the_axis_name_sees_the_whole_batch(module):
  """8 groups of 2 images, normalised with statistics averaged over the groups,
  give the outputs and running statistics of the 16 images at once."""
  x = jax.random.normal(jax.random.key(0), (16, 8, 8, 3))
  variables = random_variables(module, x)
  apply = lambda m, x: m.apply(variables, x, train=True, mutable=["batch_stats"])  # noqa: E731
  whole = jax.jit(lambda x: apply(module, x))(x)
  tower = module.clone(bn_axis_name="groups")
  synced = jax.jit(jax.vmap(lambda x: apply(tower, x), axis_name="groups"))(
      x.reshape(8, 2, *x.shape[1:]))
  np.testing.assert_allclose(synced[0].reshape(whole[0].shape), whole[0], rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(synced[1]), jax.tree.leaves(whole[1]), strict=True):
    np.testing.assert_allclose(a[0], b, rtol=1e-4, atol=1e-5)


# --- maxout -----------------------------------------------------------------------------

def test_maxout_is_the_max_over_k_linear_maps():
  k, units = 3, 4
  x = jax.random.normal(jax.random.key(0), (5, 6))
  layer = Maxout(units, k)
  p = nn.unbox(layer.init(jax.random.key(1), x))["params"]["Dense_0"]
  pieces = [x @ p["kernel"][:, j::k] + p["bias"][j::k] for j in range(k)]  # [5, units] each
  np.testing.assert_allclose(layer.apply({"params": {"Dense_0": p}}, x),
                             np.max(pieces, axis=0), rtol=1e-6, atol=1e-6)


def test_conv_maxout_is_the_max_over_k_convolutions():
  k, units = 2, 3
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 2))
  layer = Maxout(units, k, (3, 3), "VALID", kernel_axes=(None, None, "conv_in", "conv_out"))
  p = nn.unbox(layer.init(jax.random.key(1), x))["params"]["Conv_0"]

  def conv(w, b):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + b

  pieces = [conv(p["kernel"][..., j::k], p["bias"][j::k]) for j in range(k)]
  np.testing.assert_allclose(layer.apply({"params": {"Conv_0": p}}, x),
                             np.max(pieces, axis=0), rtol=1e-5, atol=1e-5)


def test_relu_is_a_two_piece_maxout_with_one_piece_zero():
  x = jax.random.normal(jax.random.key(0), (5, 6))
  layer = Maxout(4, 2)
  p = nn.unbox(layer.init(jax.random.key(1), x))["params"]["Dense_0"]
  p = {"kernel": p["kernel"].at[:, 1::2].set(0.0), "bias": p["bias"].at[1::2].set(0.0)}
  # Two matmul paths, so equal up to float32 rounding (1.2e-7 seen on some CPUs).
  np.testing.assert_allclose(layer.apply({"params": {"Dense_0": p}}, x),
                             nn.relu(x @ p["kernel"][:, 0::2] + p["bias"][0::2]),
                             rtol=1e-6, atol=1e-6)


# --- GoogLeNet's auxiliary classifiers --------------------------------------------------

GOOGLENET = dict(name="googlenet", num_classes=10)


@functools.cache
def googlenet_task():
  model = get_model(GOOGLENET)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))  # the smallest image is 15x15
  variables = random_variables(model, x)
  task = Classification(model, types.SimpleNamespace(input_shape=x.shape[1:]))
  batch = {"inputs": x, "label": jnp.array([3, 7]), "mask": jnp.ones(2)}
  return task, variables["params"], {"batch_stats": variables["batch_stats"]}, batch


@functools.cache
def googlenet_train():
  """One compilation: the model's training outputs (logits, sown auxiliary logits),
  and the task's loss, sums and gradient (of the layers looked at) for the same
  batch and dropout masks with the main classifier's kernel zeroed: the main
  logits are then 0, the main loss ln 10, and no main-loss gradient reaches the
  trunk, so whatever gradient the trunk gets comes from the auxiliary heads."""
  task, params, state, batch = googlenet_task()
  zeroed = {**params, "Dense_0": {**params["Dense_0"],
                                  "kernel": jnp.zeros_like(params["Dense_0"]["kernel"])}}
  names = ("Dense_0", "inception5b", "aux_head1", "aux_head2", "inception4a")

  @jax.jit
  def run(params, zeroed):
    logits, collections = task.model.apply(
        {"params": params, **state}, batch["inputs"], train=True, rngs={"dropout": DROPOUT_RNG},
        mutable=["batch_stats", "aux_logits"])
    loss = lambda sub: task.loss({**zeroed, **sub}, state, batch, DROPOUT_RNG)  # noqa: E731
    (value, (sums, _)), grads = jax.value_and_grad(loss, has_aux=True)(
        {name: zeroed[name] for name in names})
    return logits, collections["aux_logits"], value, sums, grads

  return run(params, zeroed)


@functools.cache
def googlenet_eval():
  """One compilation: eval logits with and without the heads, and the task's eval sums."""
  task, params, state, batch = googlenet_task()
  plain = get_model(GOOGLENET, aux_heads=False)
  trunk = {k: v for k, v in params.items() if not k.startswith("aux_head")}

  @jax.jit
  def run(params, trunk):
    logits, collections = task.model.apply({"params": params, **state}, batch["inputs"],
                                           train=False, mutable=["aux_logits"])
    return (logits, collections, task.eval_sums(params, state, batch),
            plain.apply({"params": trunk, **state}, batch["inputs"], train=False))

  return run(params, trunk)


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def norm(tree):
  return np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(tree)))


def test_googlenet_logits_are_batch_by_classes_float32_in_train_and_eval():
  for logits in (googlenet_train()[0], googlenet_eval()[0]):
    assert logits.shape == (2, 10)
    assert logits.dtype == jnp.float32
    assert np.isfinite(logits).all()


def test_googlenet_training_loss_adds_0_3_times_each_auxiliary_loss():
  _, _, _, batch = googlenet_task()
  _, sown, loss, sums, _ = googlenet_train()
  assert sorted(sown) == ["aux1", "aux2"]
  assert [weight for name in ("aux1", "aux2") for weight, _ in sown[name]] == [
      np.float32(0.3), np.float32(0.3)]
  # The heads do not depend on the main classifier, zeroed for the loss.
  aux = [cross_entropy(sown[name][0][1], batch["label"]) for name in ("aux1", "aux2")]
  np.testing.assert_allclose([sums["aux1_loss"] / 2, sums["aux2_loss"] / 2], aux, rtol=1e-5)
  np.testing.assert_allclose(loss, np.log(10) + 0.3 * sum(aux), rtol=1e-5)


def test_googlenet_auxiliary_losses_train_the_trunk_below_the_heads():
  *_, grads = googlenet_train()
  # The main loss reaches only its classifier (whose kernel is zero)...
  assert norm(grads["Dense_0"]) > 0 and norm(grads["inception5b"]) == 0
  # ...the auxiliary losses their heads and the layers below them.
  for name in ("aux_head1", "aux_head2", "inception4a"):
    assert norm(grads[name]) > 0, name


def test_googlenet_evaluation_ignores_the_auxiliary_heads():
  _, _, _, batch = googlenet_task()
  logits, collections, sums, headless_logits = googlenet_eval()
  assert "aux_logits" not in collections  # nothing sown
  assert set(sums) == {"loss", "accuracy", "count"}
  np.testing.assert_allclose(sums["loss"] / sums["count"],
                             cross_entropy(logits, batch["label"]), rtol=1e-5)
  # The same logits as the model built without heads, on the same weights.
  np.testing.assert_allclose(logits, headless_logits, rtol=1e-5, atol=1e-6)


def test_googlenet_init_in_either_mode_gives_the_same_variables_and_no_sown_logits():
  task, _, _, batch = googlenet_task()
  shapes = {train: jax.tree.map(lambda a: a.shape, jax.eval_shape(
      lambda: task.model.init(jax.random.key(0), batch["inputs"], train=train)))
      for train in (False, True)}
  assert shapes[False] == shapes[True]
  assert set(shapes[True]) == {"params", "batch_stats"}
