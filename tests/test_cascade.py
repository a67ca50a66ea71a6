"""Cascades (docs/cascades.md): thresholds calibrated exactly on a constructed case,
compacted inference equal to running every stage everywhere, the FLOPs accounting,
the canvas generator's determinism and labels, and bad configs refused, naming the
key, before anything compiles."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplearn import config as config_lib, models, schemes
from deeplearn.data.builders import canvas
from deeplearn.models import cascade as staged
from deeplearn.tasks import cascade as cascade_lib
from run_helpers import no_compilation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOPS = np.array([1.0, 10.0, 100.0])


def probs_of(preds, confs, classes=11):
  """[stages, N, classes]: per stage and example, probability conf on the
  predicted class and the rest spread evenly over the others."""
  preds, confs = np.asarray(preds), np.asarray(confs, np.float32)
  out = np.repeat(((1 - confs) / (classes - 1))[..., None], classes, -1)
  np.put_along_axis(out, preds[..., None], confs[..., None], -1)
  return out.astype(np.float32)


# Ten examples of class 0. Stage 0 is right and sure on 0-4, wrong and unsure
# (0.6) on 5-9; stage 1 right and sure on 5-7, wrong at 0.7 on 8-9; the last
# stage right everywhere.
LABELS = np.zeros(10, int)
CONSTRUCTED = probs_of(
    [[0] * 5 + [1] * 5, [0] * 8 + [2] * 2, [0] * 10],
    [[0.95] * 5 + [0.6] * 5, [0.95] * 8 + [0.7] * 2, [0.9] * 10])


def test_calibration_finds_the_known_cheapest_exact_point():
  # No loss allowed: 0-4 leave at stage 0 (cost 1), 5-7 at stage 1 (1 + 10),
  # 8-9 go through all three (111): (5 + 33 + 222) / 10 = 26 FLOPs.
  got = cascade_lib.calibrate(CONSTRUCTED, LABELS, FLOPS, (0.5, 0.9), tolerance=0.0)
  assert got["thresholds"] == (0.9, 0.9)
  assert got["flops"] == 26.0 and got["accuracy"] == 1.0 and got["last_target"] == 1.0
  np.testing.assert_array_equal(got["exit_fractions"], [0.5, 0.3, 0.2])


def test_calibration_spends_the_tolerance_on_compute():
  # Two errors allowed (0.2): stage 1 may answer 8-9 wrongly, so nobody reaches
  # the last stage: (5 * 1 + 5 * 11) / 10 = 6 FLOPs. One error (0.1) buys nothing.
  got = cascade_lib.calibrate(CONSTRUCTED, LABELS, FLOPS, (0.5, 0.9), tolerance=0.2)
  assert got["thresholds"] == (0.9, 0.5) and got["flops"] == 6.0
  assert got["accuracy"] == pytest.approx(0.8)
  tight = cascade_lib.calibrate(CONSTRUCTED, LABELS, FLOPS, (0.5, 0.9), tolerance=0.1)
  assert tight["thresholds"] == (0.9, 0.9)


def test_a_detection_cascade_only_rejects_early():
  # reject_class 10: stage 0 is sure of the digit on example 0 but may not answer it;
  # it rejects example 1 (background) at threshold 0.9.
  probs = probs_of([[3, 10], [3, 10]], [[0.99, 0.95], [0.9, 0.5]])
  pred, stage = cascade_lib.first_exits(probs, (0.9,), reject_class=10)
  np.testing.assert_array_equal(pred, [3, 10])
  np.testing.assert_array_equal(stage, [1, 0])
  got = cascade_lib.outcome(probs, np.array([3, 10]), (0.9,), FLOPS[:2], reject_class=10)
  assert got["target"] == 1.0 and got["flops"] == (11 + 1) / 2


def test_average_flops_are_the_cumulative_cost_of_the_stages_run():
  # Exits at stages 0, 0, 1, 2: (1 + 1 + 11 + 111) / 4.
  probs = probs_of([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
                   [[0.99, 0.99, 0.5, 0.5], [0.5, 0.5, 0.99, 0.5], [0.5] * 4])
  got = cascade_lib.outcome(probs, np.zeros(4, int), (0.9, 0.9), FLOPS)
  assert got["flops"] == (1 + 1 + 11 + 111) / 4


def test_xla_counts_the_stages_flops_by_hand():
  model = models.get_model({"name": "cascade", "stages": ("linear", "mlp"),
                            "mlp_hidden_sizes": (64,)})
  variables = jax.eval_shape(  # shapes are all XLA's count needs
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False))
  flops, baseline = staged.stage_flops(model, variables, (8, 8, 1))
  linear = 2 * 64 * 10 + 10  # matmul + bias
  mlp = 2 * 64 * 64 + 64 + 64 + 2 * 64 * 10 + 10  # matmul, bias, relu; matmul, bias
  np.testing.assert_array_equal(flops, [linear, mlp])
  assert baseline == mlp


def staged_model(name):
  cfg = ({"name": "cascade"} if name == "cascade" else
         {"name": "early_exit_convnet", "features": (4, 8, 8), "pools": (2, 2, 1)})
  model = models.get_model(cfg)
  # Jitted: run op by op, init and apply would compile each small op alone.
  variables = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, 8, 8, 1)), train=False))(
      jax.random.PRNGKey(1))
  return model, variables


@pytest.mark.parametrize("name", ["cascade", "early_exit_convnet"])
def test_compacted_inference_equals_every_stage_everywhere(name):
  model, variables = staged_model(name)
  x = jax.random.normal(jax.random.PRNGKey(2), (192, 8, 8, 1)) * 3
  probs = np.asarray(jax.jit(lambda v, x: jax.nn.softmax(
      model.apply(v, x, train=False), -1))(variables, x))
  conf = probs.max(-1)
  # Arguments, not constants: XLA would fold a program around baked-in arrays.
  dense = functools.partial(jax.jit(
      lambda v, x, t: staged.dense_predict(model, v, x, t)), variables, x)
  compact = functools.partial(jax.jit(
      lambda v, x, t: staged.compact_predict(model, v, x, t, bucket=32)), variables, x)
  cases = [np.median(conf[:2], axis=1), np.quantile(conf[:2], 0.9, axis=1),
           np.zeros(2), np.full(2, cascade_lib.NEVER)]  # mixed, few, all, none exit
  for thresholds in cases:
    t = jnp.asarray(thresholds, jnp.float32)
    pred_d, stage_d = dense(t)
    pred_c, stage_c = compact(t)
    np.testing.assert_array_equal(pred_c, pred_d)
    np.testing.assert_array_equal(stage_c, stage_d)
    # ... and the numpy selection the calibration uses agrees with both.
    pred_n, stage_n = cascade_lib.first_exits(probs, thresholds)
    np.testing.assert_array_equal(pred_n, pred_d)
    np.testing.assert_array_equal(stage_n, stage_d)
  assert len(set(np.asarray(dense(jnp.asarray(cases[0], jnp.float32))[1]))) == 3


def test_canvases_are_deterministic_and_labelled():
  digits = (np.random.default_rng(0).uniform(0.5, 1.0, (20, 8, 8)).astype(np.float32),
            np.arange(20) % 10)
  a, boxes_a = canvas.make_canvases(*digits, num=50, seed=7)
  b, boxes_b = canvas.make_canvases(*digits, num=50, seed=7)
  c, _ = canvas.make_canvases(*digits, num=50, seed=8)
  np.testing.assert_array_equal(a, b)
  assert boxes_a == boxes_b and not np.array_equal(a, c)
  assert {len(p) for p in boxes_a} == {0, 1, 2}
  labels, overlap = canvas.window_labels(boxes_a)
  wins = canvas.windows(a)
  assert wins.shape == (50, 169, 8, 8)
  for i, placed in enumerate(boxes_a):
    assert (labels[i] != canvas.BACKGROUND).sum() == len(placed)
    for r, c_, label in placed:
      w = (r // 2) * 13 + c_ // 2
      assert labels[i, w] == label and overlap[i, w]
      np.testing.assert_array_equal(wins[i, w], a[i, r:r + 8, c_:c_ + 8])
      assert (wins[i, w] >= digits[0][digits[1] == label][0] - 1e-6).any()
    if len(placed) == 2:
      (r1, c1, _), (r2, c2, _) = placed
      assert abs(r1 - r2) >= 8 or abs(c1 - c2) >= 8  # digits never overlap
  empty = [i for i, p in enumerate(boxes_a) if not p]
  assert not overlap[empty].any() and (a[empty] <= canvas.NOISE).all()
  x, y = canvas.training_windows(a, boxes_a, seed=7)
  positives = sum(len(p) for p in boxes_a)
  assert (y != canvas.BACKGROUND).sum() == positives and len(x) == len(y)
  assert len(y) <= positives * 3 + 3 * 50


def test_the_builder_splits_draw_on_disjoint_digits():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  parts = canvas.split_digits(digits.images, digits.target)
  assert {s: len(p[1]) for s, p in parts.items()} == {"train": 1137, "validation": 300,
                                                      "test": 360}
  flat = {s: {img.tobytes() for img in p[0]} for s, p in parts.items()}
  assert not flat["train"] & flat["test"] and not flat["validation"] & flat["test"]
  assert not flat["train"] & flat["validation"]
  x, y = canvas.split_windows(digits.images, digits.target, "validation")
  assert x.shape == (50 * 169, 8, 8) and y.shape == (50 * 169,)
  assert 0 < (y != canvas.BACKGROUND).sum() <= 100 and x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize("key, value, named", [
    ("cascade.tolerence", 0.01, "config.cascade.tolerence"),
    ("cascade.tolerance", 1.5, "config.cascade.tolerance"),
    ("cascade.thresholds", (0.9, 0.5), "config.cascade.thresholds"),
    ("cascade.calibration_split", "train[:1137]", "config.cascade.calibration_split"),
    ("cascade.calibration_split", "valid", "config.cascade.calibration_split"),
    ("cascade.reject_class", 12, "config.cascade.reject_class"),
    ("cascade.bucket_size", 0, "config.cascade.bucket_size"),
    ("model.stages", ("linear", "cnn"), "config.model.stages"),
    ("task", "classification", "config.task"),
])
def test_bad_configs_fail_before_compiling_naming_the_key(tfds_data_dir, key, value, named):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", "digits_cascade.py:tiny"))
  config.data.data_dir = tfds_data_dir
  section, _, name = key.rpartition(".")
  with config.unlocked():
    (config[section] if section else config)[name] = value
  with no_compilation(), pytest.raises(ValueError, match=named.replace(".", r"\.")):
    schemes.get_scheme(config)
