"""Model parallelism is a rules table: data, FSDP (ZeRO-3), model (Megatron
column / row splits, the convolutions' channel split) and their combinations
each train to the losses and parameters of one device, from the same state
on the same global batches, with the state sharded as the rules say. (The
transformer's FSDP x model run is in test_transformer.py: compiling its
8-device step for every strategy would take minutes.)"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
import pytest
from jax.sharding import PartitionSpec as P

from deeplearn import config as config_lib, models, step as step_lib
from deeplearn.schemes import supervised
from deeplearn.config import (DATA_PARALLEL_RULES, FSDP_MODEL_PARALLEL_RULES,
                              FSDP_RULES, MODEL_PARALLEL_RULES)
from deeplearn.models.convnet import DIGITS
from deeplearn.parallel import data_parallel, mesh as mesh_lib
from parallel_helpers import (assert_same_run, global_batches, initial_state,
                              run_steps)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (mesh, rules, mesh axis of the wide names (mlp, heads, conv_out),
# mesh axis of the narrow names (embed, conv_in))
STRATEGIES = {
    "data": ({"data": 8}, DATA_PARALLEL_RULES, None, None),
    "fsdp": ({"fsdp": 8}, FSDP_RULES, None, "fsdp"),
    "model": ({"model": 8}, MODEL_PARALLEL_RULES, "model", None),
    "data_x_model": ({"data": 4, "model": 2}, MODEL_PARALLEL_RULES, "model",
                     None),
    "fsdp_x_model": ({"fsdp": 4, "model": 2}, FSDP_MODEL_PARALLEL_RULES,
                     "model", "fsdp"),
    "data_x_fsdp_x_model": ({"data": 2, "fsdp": 2, "model": 2},
                            FSDP_MODEL_PARALLEL_RULES, "model", "fsdp"),
}

# family: (experiment, model override, kernel path -> its mesh axes given
# the wide (w) and narrow (n) names' mesh axes). Written out by hand: the
# naming scheme's specification, not flax's rule resolution again.
FAMILIES = {
    # 8x8 digits: conv 3x3x1x16 (column), 3x3x16x32 (row), dense 128x64
    # (column), 64x10 (row).
    "convnet": ("digits_convnet.py:tiny", None, lambda w, n: {
        "Conv_0": (None, None, None, w), "Conv_1": (None, None, w, n),
        "Dense_0": (n, w), "Dense_1": (w, None)}),
    # MNIST-1D: 40 -> 32 -> 32 -> 32 -> 10, column / row / column / row.
    "mlp": ("mnist1d_cnn.py:tiny",
            dict(name="mlp", num_classes=10, hidden_sizes=(32, 32, 32)),
            lambda w, n: {"Dense_0": (n, w), "Dense_1": (w, n),
                          "Dense_2": (n, w), "Dense_3": (w, None)}),
}


def make_config(family, data_dir, strategy=None):
  experiment, model, _ = FAMILIES[family]
  config = config_lib.from_file(os.path.join(ROOT, "experiments", experiment))
  config.data.data_dir = data_dir
  if model:
    config.model = ml_collections.ConfigDict(model)
  if strategy:
    mesh, rules, _, _ = STRATEGIES[strategy]
    config.mesh = ml_collections.ConfigDict(mesh)
    config.sharding.rules = rules
  return config


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tfds_data_dir):
  """A family, its start, 5 global batches, and the 1-device run from there."""
  config = make_config(request.param, tfds_data_dir)
  one = supervised.build(config, devices=jax.devices()[:1])
  init, batches = initial_state(one), global_batches(config)
  reference = run_steps(one, step_lib.make_train_step(one), init, batches)
  return request.param, init, batches, reference


def recording(step, shardings):
  """`step`, keeping the shardings of the state arrays it returns."""
  def recorded(state, batch):
    out = step(state, batch)
    shardings.append(jax.tree.map(lambda x: x.sharding, out[0]))
    return out
  return recorded


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_equals_one_device_and_shards_the_state_as_the_rules_say(
    family, strategy, tfds_data_dir):
  name, init, batches, reference = family
  run = supervised.build(make_config(name, tfds_data_dir, strategy))
  mesh, _, wide, narrow = STRATEGIES[strategy]
  assert run.mesh.size == 8 and all(run.mesh.shape[a] == s
                                    for a, s in mesh.items())
  shardings = []
  got = run_steps(run, recording(step_lib.make_train_step(run), shardings), init,
                  batches)
  assert_same_run(got, reference)

  state = shardings[-1]  # of the arrays the last step returned
  for path, axes in FAMILIES[name][2](wide, narrow).items():
    assert state.params[path]["kernel"].spec == P(*axes), path
  specs = lambda tree: jax.tree.map(lambda s: s.spec, tree)
  for moment in ("mu", "nu"):  # Adam's moments are laid out as their params
    assert specs(optax.tree_utils.tree_get(state.opt_state, moment)) == specs(
        state.params), moment
  assert run.batch_sharding.spec == P(("data", "fsdp"))
  per_device = run.mesh.shape["data"] * run.mesh.shape["fsdp"]
  batch = batches[0]["inputs"]
  assert run.batch_sharding.shard_shape(batch.shape)[0] == (
      batch.shape[0] // per_device)


@pytest.mark.parametrize("family", ["convnet"], indirect=True)
@pytest.mark.parametrize("strategy", ["data", "data_x_model"])
def test_explicit_towers_run_the_constrained_convnet_equal_to_one_device(
    family, strategy, tfds_data_dir):
  """The shard_map and pmap towers trace the model with no logical rules in
  context, so its activation constraints are no-ops; over data=4 each tower
  is a 2-device channel-parallel group that jit partitions."""
  name, init, batches, reference = family
  run = supervised.build(make_config(name, tfds_data_dir, strategy))
  assert_same_run(run_steps(run, data_parallel.make_shard_map_train_step(run),
                            init, batches), reference)
  if strategy == "data":
    assert_same_run(run_steps(run, data_parallel.make_pmap_train_step(run),
                              init, batches, pmap=True), reference)


@pytest.mark.parametrize("model, shape, constraints", [
    # each conv block's output, the flattened features, the hidden layer
    (dict(name="convnet", **DIGITS), (8, 8, 1), 4),
    (dict(name="mlp", hidden_sizes=(32, 32, 32)), (40,), 4),  # input, hidden
])
def test_activation_constraints_act_only_with_rules_and_a_mesh(
    model, shape, constraints):
  model = models.get_model(model)
  x = jax.ShapeDtypeStruct((16, *shape), jnp.float32)
  variables = nn.unbox(jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), x))
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  count = lambda: apply.lower(variables, x).as_text().count(
      "sharding_constraint")
  mesh = mesh_lib.make_mesh({"data": 4, "model": 2})
  with nn.logical_axis_rules(MODEL_PARALLEL_RULES):
    assert count() == 0  # no mesh: as in the pmap and shard_map towers
    with jax.set_mesh(mesh):
      assert count() == constraints


def test_distbelief_experiment_splits_every_kernel_over_model(tfds_data_dir):
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "digits_convnet_distbelief.py"))
  config.data.data_dir = tfds_data_dir
  run = supervised.build(config)
  assert (run.mesh.shape["data"], run.mesh.shape["model"]) == (4, 2)
  kernels = {layer: params["kernel"].spec
             for layer, params in run.state_shardings.params.items()}
  assert kernels == {
      "Conv_0": P(None, None, None, "model"), "Conv_1": P(None, None, "model", None),
      "Dense_0": P(None, "model"), "Dense_1": P("model", None)}
