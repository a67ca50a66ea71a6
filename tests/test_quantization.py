"""Quantisation with qwix (deeplearn/quantization.py): PTQ numbers against a
hand computation, the quantised checkpoint's round trip through
deeplearn.evaluate, quantisation-aware training, and rules that fail before
anything compiles, naming the key."""

import json
import math
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import qwix

from deeplearn import (checkpoint, config as config_lib, evaluate, quantization,
                       train)
from deeplearn.models import layers
from deeplearn.schemes import supervised

# qwix 0.1.8 checks for flax's removed nnx.VariableState alias on every op.
pytestmark = pytest.mark.filterwarnings(
    "ignore:'VariableState' was removed:DeprecationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOAT = os.path.join(ROOT, "experiments", "digits_convnet.py:tiny")
QAT = os.path.join(ROOT, "experiments", "digits_convnet_int8.py:tiny")


def tiny(spec, data_dir, **rules):
  config = config_lib.from_file(spec)
  config.data.data_dir = data_dir
  config.train.progress = False
  config.train.compilation_cache_dir = ""  # the test session's own cache
  for key, value in rules.items():
    config.quantization[key] = value
  return config


def one_device():
  return jax.devices()[:1]


@pytest.fixture(scope="module")
def float_run(tfds_data_dir, tmp_path_factory):
  """A finished 30-step run of the digits convnet (float32)."""
  workdir = str(tmp_path_factory.mktemp("digits_float"))
  summary = train.train_and_evaluate(tiny(FLOAT, tfds_data_dir), workdir,
                                     one_device())
  return workdir, summary


@pytest.fixture(scope="module")
def int8_result(float_run):
  """`deeplearn.evaluate --quantize int8` of the float run."""
  return evaluate.quantize_checkpoint(float_run[0], "int8", devices=one_device())


def test_ptq_of_a_known_kernel_matches_the_hand_computation():
  """qwix's int8 PTQ of a dense layer: symmetric scales per output column,
  absmax / 127.5 (qwix widens the top bucket by half a step), values
  round(w / scale) saturated to [-128, 127]; the forward pass quantises each
  input row the same way and rescales the integer product."""
  kernel = np.array([[1.0, -0.5], [0.25, 2.0], [-1.0, 0.1]], np.float32)
  bias = np.array([0.5, -1.0], np.float32)
  model = layers.Dense(2)
  qmodel, _ = quantization.ptq_model(quantization.PRESETS["int8"], model)
  inputs = np.array([[0.3, -1.2, 0.9], [2.0, 0.5, -0.25]], np.float32)
  with layers.Kernels(quantization.PTQ_KERNELS):
    abstract = jax.eval_shape(qmodel.init, jax.random.PRNGKey(0), inputs)
    params = qwix.quantize_params({"kernel": jnp.asarray(kernel),
                                   "bias": jnp.asarray(bias)},
                                  abstract["params"])
    outputs = qmodel.apply({"params": params}, inputs)
  q = params["kernel"].array
  scale = np.array([[1.0 / 127.5, 2.0 / 127.5]], np.float32)
  np.testing.assert_allclose(np.asarray(q.scale), scale, rtol=1e-6)
  assert q.qvalue.dtype == jnp.int8
  # The largest |w| of a column lands on the half-way point +-127.5, which
  # XLA's float32 quotient puts just inside (127.49999): stored as +-127.
  # So by hand: round(w / scale), clipped to [-127, 127].
  expected = np.array([[127, -32], [32, 127], [-127, 6]])
  np.testing.assert_array_equal(np.asarray(q.qvalue), expected)
  np.testing.assert_array_equal(
      expected, np.clip(np.round(kernel / scale), -127, 127))
  x_scale = np.abs(inputs).max(axis=1, keepdims=True) / 127.5
  x_q = np.clip(np.round(inputs / x_scale), -127, 127)
  hand = (x_q @ expected) * x_scale * scale + bias
  np.testing.assert_allclose(np.asarray(outputs), hand, rtol=1e-5, atol=1e-6)
  assert not np.allclose(hand, inputs @ kernel + bias, atol=1e-4)
  np.testing.assert_allclose(hand, inputs @ kernel + bias, atol=0.05)


def test_int4_kernel_is_stored_on_the_symmetric_grid():
  kernel = jnp.linspace(-1.0, 1.0, 32).reshape(16, 2)
  qmodel, _ = quantization.ptq_model(quantization.PRESETS["int4"],
                                     layers.Dense(2))
  with layers.Kernels(quantization.PTQ_KERNELS):
    abstract = jax.eval_shape(qmodel.init, jax.random.PRNGKey(0),
                              jnp.zeros((1, 16)))
  params = qwix.quantize_params({"kernel": kernel, "bias": jnp.zeros(2)},
                                abstract["params"])
  q = params["kernel"].array
  assert q.qvalue.dtype == jnp.int4
  values = np.asarray(q.qvalue.astype(jnp.int8))
  np.testing.assert_allclose(np.asarray(q.scale), [[1.0 / 7.5, 1.0 / 7.5]],
                             rtol=1e-6)
  np.testing.assert_array_equal(  # the extremes at +-7.5, stored as +-7
      values, np.clip(np.round(np.asarray(kernel) / np.asarray(q.scale)), -7, 7))
  assert len(np.unique(values)) == 15


def test_quantised_checkpoint_is_smaller_restores_and_scores_the_same(
    float_run, int8_result):
  workdir, summary = float_run
  result = int8_result
  assert result["float32"]["accuracy"] == pytest.approx(
      summary["final"]["accuracy"])
  sizes = result["bytes_on_disk"]
  assert sizes["int8"] < 0.6 * sizes["float32"], sizes
  stored = result["stored_params"]["int8"]
  assert stored["int8"] > 0.95 * sum(stored.values())  # all kernels int8
  directory = os.path.join(workdir, "quantized", "int8")
  again = evaluate.evaluate_checkpoint(directory, devices=one_device())
  assert again["bytes_on_disk"] == sizes["int8"]
  for key in ("accuracy", "loss"):
    assert again[key] == pytest.approx(result["int8"][key], rel=1e-6, abs=1e-6)
  # int8 loses little of the float model's accuracy on 360 test digits.
  assert abs(result["int8"]["accuracy"] - result["float32"]["accuracy"]) < 0.03

  int4 = evaluate.quantize_checkpoint(workdir, "int4", devices=one_device())
  assert int4["bytes_on_disk"]["int4"] < sizes["int8"]
  assert int4["stored_params"]["int4"]["int4"] > 13_000
  again = evaluate.evaluate_checkpoint(
      os.path.join(workdir, "quantized", "int4"), devices=one_device())
  assert again["loss"] == pytest.approx(int4["int4"]["loss"], rel=1e-6)


def test_an_array_that_differs_from_its_checksum_is_refused(
    float_run, int8_result, tmp_path):
  del int8_result  # written
  workdir, _ = float_run
  directory = os.path.join(workdir, "quantized", "int8")
  manifest = quantization.read_manifest(directory)
  name = next(n for n, a in manifest["arrays"].items() if a["dtype"] == "int8")
  manifest["arrays"][name]["checksum"][0] += 1  # as if the array had changed
  copy = tmp_path / "int8"
  shutil.copytree(directory, copy)
  (copy / quantization.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(checkpoint.CorruptCheckpointError, match=re.escape(name)):
    evaluate.evaluate_checkpoint(str(copy), devices=one_device())


def test_qat_trains_and_its_fake_quantised_forward_is_close_to_float(
    float_run, tfds_data_dir, tmp_path):
  workdir, float_summary = float_run
  summary = train.train_and_evaluate(tiny(QAT, tfds_data_dir), str(tmp_path),
                                     one_device())
  assert math.isfinite(summary["final"]["loss"])
  assert summary["final"]["accuracy"] > 0.5  # 30 steps; chance is 0.1
  # The same float weights through the QAT model's forward pass.
  config = tiny(QAT, tfds_data_dir)
  run = supervised.build(config, one_device())
  state = run.init_fn(config.train.seed)
  qat_model = run.task.model
  float_model = quantization.unquantized(qat_model)
  assert type(float_model) is not type(qat_model)
  images = jax.random.normal(jax.random.PRNGKey(1), (64, 8, 8, 1))
  variables = {"params": state.params}
  fp32 = float_model.apply(variables, images, train=False)
  fake = qat_model.apply(variables, images, train=False)
  difference = float(jnp.max(jnp.abs(fake - fp32)))
  assert difference > 1e-5
  assert difference < 0.05 * float(jnp.max(jnp.abs(fp32)))
  assert float_summary["final"]["loss"] != summary["final"]["loss"]


@pytest.mark.parametrize("rules, message", [
    (((".*", "int3", "int8"),), r"config.quantization.rules\[0\].*'int3'.*int8"),
    (((".*", "int8", "float8"),), r"config.quantization.rules\[0\].*activation"),
    ((("(", "int8", "int8"),), r"config.quantization.rules\[0\].*regular expr"),
    (((".*", "int8", "int8", "rms"),), r"rules\[0\].*calibration 'rms'"),
    (((".*", "int8"),), r"rules\[0\].*\(module-path regex"),
    ((), r"config.quantization.rules=\(\) must be a non-empty"),
])
def test_malformed_rules_fail_naming_the_key(rules, message):
  with pytest.raises(ValueError, match=message):
    quantization.parse_rules(rules)


def test_a_rule_matching_no_module_fails_before_compiling(tfds_data_dir):
  config = tiny(QAT, tfds_data_dir, rules=(("Conv_.*", "int8", "int8"),
                                           ("Dense_7", "int8", "none")))
  with pytest.raises(ValueError, match=r"config.quantization.rules\[1\].*"
                     r"'Dense_7' matches no.*'Conv_0'"):
    supervised.build(config, one_device())


def test_an_unknown_mode_and_a_rule_qwix_refuses_fail_naming_the_key(
    tfds_data_dir):
  with pytest.raises(ValueError, match=r"config.quantization.mode='qta'.*'qat'"):
    supervised.build(tiny(QAT, tfds_data_dir, mode="qta"), one_device())
  # int4 weights against int8 activations: lax's convolution refuses mixed types.
  config = tiny(QAT, tfds_data_dir, rules=((".*", "int4", "int8"),))
  with pytest.raises(ValueError, match=r"config.quantization.rules=.*refuses"):
    supervised.build(config, one_device())
  with pytest.raises(ValueError, match=r"--quantize='int16'"):
    evaluate.quantize_checkpoint("/nonexistent", "int16")
