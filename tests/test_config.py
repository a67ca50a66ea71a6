"""Config, mesh and optimizer construction: errors name the key and the fix."""

import glob
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from deeplearn import config as config_lib, data, models, optim, tasks
from deeplearn.parallel import mesh as mesh_lib, sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py")))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_experiment_files_are_short_and_complete(path):
  with open(path) as f:
    assert len(f.read().splitlines()) < 80
  config = config_lib.from_file(path)
  for section in ("model", "data", "optimizer", "schedule", "mesh", "sharding",
                  "train", "eval"):
    assert section in config, section
  assert config.model.name and config.data.dataset
  assert config.train.num_steps or config.train.num_epochs


def test_from_file_selects_the_variant_and_locks():
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny"))
  assert config.train.num_steps == 20
  with pytest.raises(AttributeError):
    config.train.num_stepz = 1
  with pytest.raises(FileNotFoundError, match="nope.py"):
    config_lib.from_file("experiments/nope.py")


def test_locked_config_rejects_misspelled_key_and_wrong_type():
  config = config_lib.default_config()
  config.lock()
  with pytest.raises(AttributeError, match="learnin_rate"):
    config.optimizer.learnin_rate = 0.1
  with pytest.raises(TypeError):
    config.train.num_steps = "many"


def test_config_json_round_trip_keeps_tuples():
  config = config_lib.default_config()
  config.model = ml_collections.ConfigDict({"name": "mlp",
                                            "hidden_sizes": (100, 100)})
  back = config_lib.from_json(config_lib.to_json(config))
  assert back.model.hidden_sizes == (100, 100)
  assert back.sharding.rules == config.sharding.rules
  assert back.data.data_dir is None


def test_num_train_steps_from_epochs_or_steps():
  config = config_lib.default_config()
  with pytest.raises(ValueError, match="num_steps"):
    config_lib.num_train_steps(config, 4000)
  config.train.num_epochs = 2.0
  config.data.batch_size = 100
  assert config_lib.num_train_steps(config, 4000) == 80
  config.train.num_steps = 10
  with pytest.raises(ValueError, match="only one"):
    config_lib.num_train_steps(config, 4000)


def test_batch_size_must_divide_over_the_batch_shards():
  config = config_lib.default_config()
  config.data.batch_size = 100
  with pytest.raises(ValueError, match=r"config.data.batch_size=100 .* 8"):
    config_lib.validate(config, num_batch_shards=8, process_count=1)
  config.data.batch_size = 104
  config_lib.validate(config, num_batch_shards=8, process_count=1)


def test_mesh_minus_one_takes_the_rest():
  ones = dict.fromkeys(mesh_lib.AXES, 1)
  assert mesh_lib.mesh_shape({"data": -1}, 8) == {**ones, "data": 8}
  assert mesh_lib.mesh_shape({"data": -1, "model": 2}, 8) == {
      **ones, "data": 4, "model": 2}
  assert mesh_lib.mesh_shape({"data": -1}, 1) == ones


@pytest.mark.parametrize("cfg,match", [
    ({"data": 3, "model": 2}, "uses 6 devices but 8"),
    ({"data": -1, "model": -1}, "only one axis"),
    ({"data": -1, "model": 3}, "does not divide"),
    ({"dta": -1}, "unknown axes"),
])
def test_mesh_errors(cfg, match):
  with pytest.raises(ValueError, match=match):
    mesh_lib.mesh_shape(cfg, 8)


def test_mesh_on_all_devices_and_on_a_subset():
  assert jax.device_count() == 8
  eight = mesh_lib.make_mesh({"data": -1})
  assert eight.shape["data"] == 8 and eight.size == 8
  assert mesh_lib.describe(eight) == "data=8"
  one = mesh_lib.make_mesh({"data": -1}, jax.devices()[:1])
  assert one.size == 1 and mesh_lib.describe(one) == "data=1"
  rules = config_lib.DATA_PARALLEL_RULES
  assert sharding.num_batch_shards(rules, mesh_lib.make_mesh({"data": -1})) == 8


def test_slices_split_the_data_axis_else_fsdp_else_nothing():
  sizes = dict.fromkeys(mesh_lib.AXES, 1)
  assert mesh_lib.dcn_shape({**sizes, "data": 4, "model": 2}, 2) == {
      **sizes, "data": 2}
  assert mesh_lib.dcn_shape({**sizes, "fsdp": 4, "model": 2}, 4) == {
      **sizes, "fsdp": 4}
  with pytest.raises(ValueError, match="on 4 slices.*data=8"):
    mesh_lib.dcn_shape({**sizes, "data": 2, "fsdp": 2, "model": 2}, 4)


def test_a_two_slice_mesh_crosses_slices_only_on_the_data_axis():
  pytest.importorskip("libtpu", reason="TPU topologies need pip install -e '.[tpu]'")
  # Through inspect's loader, which lets libtpu load beside other processes (pytest -n 2).
  from deeplearn.inspect.topology import topology_devices
  devices = topology_devices("v5e:2x2", num_slices=2)
  mesh = mesh_lib.make_mesh({"data": -1, "model": 2}, devices)
  assert mesh_lib.describe(mesh) == "data=4 model=2"
  slices = np.vectorize(lambda d: d.slice_index)(mesh.devices).reshape(4, 2)
  # Rows (data) 0-1 on slice 0, 2-3 on slice 1; each model pair in one slice.
  np.testing.assert_array_equal(slices, [[0, 0], [0, 0], [1, 1], [1, 1]])


def test_sharding_rule_naming_a_missing_mesh_axis_fails():
  mesh = mesh_lib.make_mesh({"data": -1})
  with pytest.raises(ValueError, match="'mlp' to mesh axis 'modle'"):
    sharding.check_rules((("mlp", "modle"),), mesh)


def _sched_cfg(**kw):
  cfg = config_lib.default_config().schedule
  cfg.update(kw)
  return cfg


def test_warmup_then_cosine_schedule():
  sched = optim.make_schedule(_sched_cfg(name="cosine", warmup_steps=10), 1.0,
                              110)
  np.testing.assert_allclose(sched(0), 0.0)
  np.testing.assert_allclose(sched(5), 0.5)
  np.testing.assert_allclose(sched(10), 1.0)
  np.testing.assert_allclose(sched(60), 0.5, atol=1e-6)
  np.testing.assert_allclose(sched(110), 0.0, atol=1e-6)


def test_step_and_exponential_decay():
  step = optim.make_schedule(_sched_cfg(name="step", decay_steps=10,
                                        decay_rate=0.5), 1.0, 100)
  assert float(step(9)) == 1.0 and float(step(10)) == 0.5
  expo = optim.make_schedule(_sched_cfg(name="exponential", decay_steps=10,
                                        decay_rate=0.5), 1.0, 100)
  np.testing.assert_allclose(expo(5), 0.5 ** 0.5, rtol=1e-6)


def _opt_cfg(**kw):
  cfg = config_lib.default_config().optimizer
  cfg.update(kw)
  return cfg


def test_sgd_momentum_matches_the_lecture_update():
  cfg = _opt_cfg(name="sgd", momentum=0.9, learning_rate=0.1)
  tx = optim.make_optimizer(cfg, optax.constant_schedule(0.1))
  w = jnp.array([1.0, -2.0])
  state = tx.init(w)
  v = jnp.zeros(2)
  w_ref = w
  for g in (jnp.array([0.5, 1.0]), jnp.array([-1.0, 0.25])):
    updates, state = tx.update(g, state, w)
    w = optax.apply_updates(w, updates)
    v = 0.9 * v + g  # u_t = momentum * u_{t-1} + g_t;  w -= lr * u_t
    w_ref = w_ref - 0.1 * v
  np.testing.assert_allclose(w, w_ref, rtol=1e-6)


def test_clipping_and_coupled_l2():
  cfg = _opt_cfg(name="sgd", learning_rate=1.0, grad_clip_norm=1.0, l2=0.5)
  tx = optim.make_optimizer(cfg, optax.constant_schedule(1.0))
  w = jnp.array([2.0, 0.0])
  updates, _ = tx.update(jnp.array([30.0, 40.0]), tx.init(w), w)
  # clipped gradient (0.6, 0.8), plus l2 * w = (1.0, 0.0), times -lr.
  np.testing.assert_allclose(updates, [-1.6, -0.8], rtol=1e-6)


@pytest.mark.parametrize("name,kw", [("sgd", dict(l2=0.5)),
                                     ("adamw", dict(weight_decay=0.5))])
def test_decay_mask_kernels_spares_biases_and_norm_scales(name, kw):
  # Stacked (scanned) layers: the LayerNorm scale is 2-D, yet not decayed.
  params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
            "embed": {"embedding": jnp.ones((4, 2))},
            "ln": {"scale": jnp.ones((2, 3))}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  moved = {}
  for mask in ("all", "kernels"):
    cfg = _opt_cfg(name=name, learning_rate=1.0, decay_mask=mask, **kw)
    tx = optim.make_optimizer(cfg, optax.constant_schedule(1.0))
    updates, _ = tx.update(zeros, tx.init(params), params)
    moved[mask] = jax.tree.map(lambda u: bool(jnp.all(u != 0)), updates)
  assert all(jax.tree.leaves(moved["all"]))
  assert moved["kernels"] == {"dense": {"kernel": True, "bias": False},
                              "embed": {"embedding": True},
                              "ln": {"scale": False}}
  with pytest.raises(ValueError, match="did you mean 'kernels'"):
    optim.make_optimizer(_opt_cfg(decay_mask="kernel"),
                         optax.constant_schedule(1.0))


def test_decoupled_weight_decay_only_for_adamw():
  with pytest.raises(ValueError, match="config.optimizer.l2"):
    optim.make_optimizer(_opt_cfg(name="adam", weight_decay=0.1),
                         optax.constant_schedule(1e-3))
  with pytest.raises(ValueError, match="config.optimizer.name='rmsprop'"):
    optim.make_optimizer(_opt_cfg(name="rmsprop"), optax.constant_schedule(1.0))


def test_polyak_average_is_the_mean_of_the_iterates():
  cfg = _opt_cfg(averaging="polyak")
  iterates = [jnp.array(x) for x in (1.0, 2.0, 6.0, 3.0)]
  avg = iterates[0]
  for step, w in enumerate(iterates):
    avg = optax.incremental_update(w, avg, optim.average_step_size(cfg, step))
  np.testing.assert_allclose(avg, 3.0, rtol=1e-6)


def test_a_stored_config_without_newer_keys_reads_back_with_their_defaults():
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny"))
  stored = json.loads(config_lib.to_json(config))
  del stored["loss"], stored["optimizer"]["decay_mask"]
  back = config_lib.from_json(json.dumps(stored))
  assert back.loss.label_smoothing == 0.0
  assert back.optimizer.decay_mask == "all"
  assert back.model.to_dict() == config.model.to_dict()
  assert back.optimizer.learning_rate == config.optimizer.learning_rate


def _layer_update(name, **kw):
  """One step of `name` on a 2-layer tree with gradient g = w / 10."""
  params = {"a": {"kernel": jnp.full((4, 4), 2.0), "bias": jnp.ones(4)},
            "b": {"kernel": jnp.full((4, 2), 0.01)}}
  grads = jax.tree.map(lambda w: w / 10, params)
  cfg = _opt_cfg(name=name, learning_rate=1.0, **kw)
  tx = optim.make_optimizer(cfg, optax.constant_schedule(1.0))
  updates, _ = tx.update(grads, tx.init(params), params)
  return params, updates


def test_lars_scales_each_layer_step_by_its_trust_ratio():
  params, updates = _layer_update("lars", momentum=0.9, trust_coefficient=0.001)
  # |u| / |w| = trust_coefficient * lr for every layer, whatever its scale.
  for path in (("a", "kernel"), ("b", "kernel"), ("a", "bias")):
    w, u = params[path[0]][path[1]], updates[path[0]][path[1]]
    np.testing.assert_allclose(jnp.linalg.norm(u) / jnp.linalg.norm(w), 1e-3,
                               rtol=1e-5)
  # decay_mask="kernels": the bias takes the plain momentum-SGD step.
  params, updates = _layer_update("lars", momentum=0.9, decay_mask="kernels")
  np.testing.assert_allclose(updates["a"]["bias"], -0.1 * params["a"]["bias"],
                             rtol=1e-6)


def test_lamb_steps_are_proportional_to_each_layers_norm():
  params, updates = _layer_update("lamb", weight_decay=0.01)
  ratios = [jnp.linalg.norm(updates[k]["kernel"]) / jnp.linalg.norm(
      params[k]["kernel"]) for k in ("a", "b")]
  np.testing.assert_allclose(ratios[0], ratios[1], rtol=1e-5)
  np.testing.assert_allclose(ratios[0], 1.0, rtol=1e-4)  # lr 1: |u| = |w|


def test_linear_scaling_rule():
  assert optim.linear_scaling(0.1, 8192) == pytest.approx(3.2)
  assert optim.linear_scaling(0.1, 128, base_batch_size=256) == 0.05


def test_label_smoothing_trains_on_soft_targets_and_evaluates_plainly():
  info = data.DatasetInfo(name="toy", num_examples={}, num_classes=4,
                          vocab_size=None, vocab=None, input_shape=(3,),
                          task="classification")
  model = models.get_model({"name": "linear", "num_classes": 4})
  task = tasks.get_task("classification", model, info, label_smoothing=0.2)
  batch = {"inputs": jnp.ones((2, 3)), "label": jnp.array([0, 3]),
           "mask": jnp.ones(2)}
  variables = dict(nn.unbox(task.init_variables(jax.random.PRNGKey(0))))
  params = variables.pop("params")
  loss, _ = task.loss(params, variables, batch, jax.random.PRNGKey(1))
  logp = jax.nn.log_softmax(model.apply({"params": params}, batch["inputs"],
                                        train=False))
  soft = jax.nn.one_hot(batch["label"], 4) * 0.8 + 0.2 / 4
  np.testing.assert_allclose(loss, -jnp.mean(jnp.sum(soft * logp, -1)),
                             rtol=1e-6)
  plain = -jnp.sum(logp[jnp.arange(2), batch["label"]])
  np.testing.assert_allclose(task.eval_sums(params, variables, batch)["loss"],
                             plain, rtol=1e-6)
  with pytest.raises(ValueError, match="label_smoothing=1.0"):
    tasks.get_task("classification", model, info, label_smoothing=1.0)
