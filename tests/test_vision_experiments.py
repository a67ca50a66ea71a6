"""The vision experiments: each `:tiny` variant compiles and trains a few steps on 8
simulated CPU devices (TFDS mock data for mnist, cifar10 and imagenet2012, whose
random images of 5-49 px the tiny specs crop and resize; the real sklearn digits for
the maxout MLP), and every full-size config builds the published model."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from deeplearn import config as config_lib, models, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(spec):
  return config_lib.from_file(os.path.join(ROOT, "experiments", spec))


@pytest.fixture
def whole_array_saves():
  """Checkpoints written array by array rather than replica-parallel: orbax's
  default slices every replicated array once per device, each slice a compiled
  op (GoogLeNet's state on 8 CPU devices: about 5,400, and a 32 s first save
  instead of 6 s). These tests check the experiments, not the checkpoint layout."""
  default = ocp.type_handlers.get_type_handler(jax.Array)
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  yield
  ocp.type_handlers.register_type_handler(jax.Array, default, override=True)


def train_tiny(config, workdir):
  config.train.progress = False
  summary = train.train_and_evaluate(config, workdir)
  assert summary["devices"] == 8
  assert summary["final"]["step"] == config.train.num_steps
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    losses = [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]
  assert len(losses) >= 2 and np.isfinite(losses).all()
  assert np.isfinite(summary["final"]["loss"])  # evaluation's
  return summary


@pytest.mark.parametrize("name,mesh", [
    ("mnist_lenet5", {"data": 8}),
    ("imagenet_alexnet", {"data": 8}),
    # The ResNets' and GoogLeNet's :tiny (100-150 s each here on 8 devices) run on one
    # through the CLI in tests/test_experiments.py; tests/test_vision_models.py checks
    # the families, and tests/test_model_parallel.py the convolutions' FSDP split.
])
def test_tiny_variant_trains_on_mock_data_with_a_finite_loss(name, mesh, tmp_path,
                                                            whole_array_saves):
  config = load(f"{name}.py:tiny")
  config.data.data_dir = str(tmp_path / "tfds")
  with tfds.testing.mock_data(num_examples=32):
    summary = train_tiny(config, str(tmp_path / name))
  assert {k: v for k, v in summary["mesh"].items() if v > 1} == mesh


def test_tiny_maxout_mlp_trains_on_the_real_digits(tfds_data_dir, tmp_path):
  config = load("digits_mlp_maxout.py:tiny")
  config.data.data_dir = tfds_data_dir
  train_tiny(config, str(tmp_path / "maxout"))


@pytest.mark.parametrize("spec,shape,params", [
    ("mnist_lenet5.py", (28, 28, 1), 61_706),
    ("cifar10_resnet_fast.py", (32, 32, 3), 6_573_120),
    ("imagenet_resnet50.py", (224, 224, 3), 25_557_032),
    ("imagenet_resnet50.py:lars,low_res", (128, 128, 3), 25_557_032),
    ("imagenet_alexnet.py", (224, 224, 3), 61_100_840),
    ("imagenet_inception_v1.py", (224, 224, 3), 13_004_888),
    ("digits_mlp_maxout.py", (8, 8, 1), 5 * (65 * 240 + 241 * 240) + 2_410),
])
def test_full_size_config_builds_the_published_model(spec, shape, params):
  model = models.get_model(load(spec).model)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False),
      jax.ShapeDtypeStruct((1, *shape), jnp.float32))
  assert sum(x.size for x in jax.tree.leaves(variables["params"])) == params
