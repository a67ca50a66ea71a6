"""Knowledge distillation (deeplearn/tasks/distillation.py, config.distill): the
loss equals a hand computation; at high temperature it becomes the paper's logit
matching; the teacher's variables go through a step unchanged and get no
gradient; bad settings fail before anything compiles, naming the key; a tiny
teacher run teaches a student end to end, from its workdir and from its
exported logits alike; the paper's bias correction picks the best shift."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplearn import config as config_lib, data, evaluate, metrics, step as step_lib, train
from deeplearn.schemes import supervised
from deeplearn.tasks import distillation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def experiment(name, data_dir, variant="tiny", **distill):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", f"{name}.py")
                                + (f":{variant}" if variant else ""))
  with config.unlocked():
    config.data.data_dir = data_dir
    config.train.progress = False
    config.distill.update(distill)
  return config


def short(config, steps):
  with config.unlocked():
    config.train.update(num_steps=steps, log_every=2, eval_every=steps,
                        checkpoint_every=steps)
  return config


def student(data_dir, **distill):
  """The MNIST-1D MLP student at 4 steps, taught as `distill` says."""
  return short(experiment("mnist1d_mlp", data_dir, **distill), 4)


@pytest.fixture(scope="module")
def teacher(tfds_data_dir, tmp_path_factory):
  """A finished tiny MNIST-1D CNN run (6 steps): the teacher's workdir."""
  workdir = str(tmp_path_factory.mktemp("teacher"))
  train.train_and_evaluate(short(experiment("mnist1d_cnn", tfds_data_dir), 6), workdir)
  return workdir


def log_softmax_np(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_soft_loss_is_t_squared_kl_of_the_softened_distributions():
  rng = np.random.default_rng(0)
  zs, zt = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
  t = 2.5
  log_ps, log_pt = log_softmax_np(zs / t), log_softmax_np(zt / t)
  expected = t * t * np.sum(np.exp(log_pt) * (log_pt - log_ps), -1)
  got = distillation.soft_loss(jnp.asarray(zs, jnp.float32),
                               jnp.asarray(zt, jnp.float32), t)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Identical logits: nothing to learn; a teacher probability of 0 stays finite.
  np.testing.assert_allclose(distillation.soft_loss(zs, zs, t), 0, atol=1e-5)
  certain = np.where(np.arange(7) == 0, -1e30, zs)  # p_t = 0 for class 0
  assert np.isfinite(distillation.soft_loss(zs, certain, t)).all()


def test_the_task_loss_weighs_soft_and_hard_terms_over_the_transfer_set():
  """alpha * soft + (1 - alpha) * cross-entropy, averaged over the examples
  not of omit_class; the batch's precomputed teacher logits as given."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(6, 4)).astype(np.float32)
  labels = np.array([0, 1, 2, 1, 2, 0], np.int32)
  w = rng.normal(size=(4, 3)).astype(np.float32)
  zt = rng.normal(size=(6, 3)).astype(np.float32) * 4

  class Linear:  # the student's model: x @ w, as a flax module would apply it
    def apply(self, variables, inputs, train, rngs=None, mutable=False):
      del train, rngs
      out = inputs @ variables["params"]["w"]
      return (out, {}) if mutable else out

  table = distillation.LogitsTable(logits=zt, rows={}, key="k")
  t, alpha = 3.0, 0.7
  for omit in (-1, 2):
    task = distillation.Distillation(Linear(), None, temperature=t, alpha=alpha,
                                     logits=table, omit_class=omit)
    batch = {"inputs": x, "label": labels, distillation.LOGITS_KEY: zt}
    loss, (sums, _) = task.loss({"w": w}, {}, batch, None)
    zs = x @ w
    keep = labels != omit
    log_ps = log_softmax_np(zs)
    hard = -log_ps[np.arange(6), labels]
    log_pt, log_qs = log_softmax_np(zt / t), log_softmax_np(zs / t)
    soft = t * t * np.sum(np.exp(log_pt) * (log_pt - log_qs), -1)
    expected = np.sum((alpha * soft + (1 - alpha) * hard)[keep]) / keep.sum()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(sums["soft_loss"], soft[keep].sum(), rtol=1e-5)
    np.testing.assert_allclose(sums["hard_loss"], hard[keep].sum(), rtol=1e-5)
    assert sums["count"] == keep.sum()


def test_at_high_temperature_distillation_is_logit_matching():
  """The paper's section 2.1: for zero-mean logits over N classes, as T grows
  the gradient of T^2 * KL w.r.t. the student's logits tends to (z_s - z_t) / N,
  and the loss to the squared logit difference / (2N)."""
  rng = np.random.default_rng(2)
  n = 10
  zs, zt = rng.normal(size=(4, n)), rng.normal(size=(4, n))
  zs, zt = zs - zs.mean(-1, keepdims=True), zt - zt.mean(-1, keepdims=True)
  zs, zt = jnp.asarray(zs, jnp.float32), jnp.asarray(zt, jnp.float32)
  grad = jax.grad(lambda s: distillation.soft_loss(s, zt, 1000.0).sum())(zs)
  np.testing.assert_allclose(grad, (zs - zt) / n, rtol=2e-2, atol=1e-4)
  # The loss itself at T = 30: at T = 1000 it is ~1e-7, below float32's
  # resolution of log p ~ -log N.
  np.testing.assert_allclose(distillation.soft_loss(zs, zt, 30.0),
                             jnp.sum((zs - zt) ** 2, -1) / (2 * n), rtol=1e-2)
  # At T = 1 it is not: the limit is what the temperature buys.
  low = jax.grad(lambda s: distillation.soft_loss(s, zt, 1.0).sum())(zs)
  assert not np.allclose(low, (zs - zt) / n, rtol=0.2)


def test_the_teacher_goes_through_a_step_unchanged_and_gets_no_gradient(
    teacher, tfds_data_dir):
  scheme = supervised.Supervised(student(tfds_data_dir, teacher_workdir=teacher,
                                         temperature=4.0))
  run, state = scheme.run, scheme.init_state()
  before = jax.device_get(state.model_state[distillation.TEACHER])
  restored = supervised.load_finished(teacher).variables
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(restored), strict=True):
    np.testing.assert_array_equal(a, b)  # the restored teacher, on the student's mesh
  batch = next(iter(data.train_dataset(run.config.data, seed=0, process_index=0,
                                       process_count=1)))
  # No gradient reaches the teacher's variables through the loss.
  teacher_grads = jax.grad(
      lambda tv: run.task.loss(state.params, {**state.model_state,
                                              distillation.TEACHER: tv},
                               batch, jax.random.PRNGKey(0))[0])(
                                   state.model_state[distillation.TEACHER])
  assert all(not np.any(g) for g in jax.tree.leaves(teacher_grads))
  params_before = jax.device_get(state.params)
  new, metrics, _ = step_lib.make_train_step(run)(state, batch)
  after = jax.device_get(new.model_state[distillation.TEACHER])
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(params_before), jax.tree.leaves(jax.device_get(new.params))))
  assert float(metrics["soft_loss"]) > 0


@pytest.mark.parametrize("distill, match", [
    ({"temperature": 0.0}, r"config\.distill\.temperature=0\.0 must be > 0"),
    ({"temperature": -2.0}, r"config\.distill\.temperature=-2\.0 must be > 0"),
    ({"alpha": 1.5}, r"config\.distill\.alpha=1\.5 must be in \[0, 1\]"),
    ({"alpha": -0.1}, r"config\.distill\.alpha=-0\.1 must be in \[0, 1\]"),
    ({"omit_class": 10}, r"config\.distill\.omit_class=10: a class of mnist1d"),
    ({"teacher_workdir": "/nonexistent/teacher"},
     r"config\.distill\.teacher_workdir='/nonexistent/teacher' has no checkpoints"),
    ({"teacher_logits": "/nonexistent/logits.npz"},
     r"config\.distill\.teacher_logits='/nonexistent/logits\.npz' is not a file"),
])
def test_bad_settings_fail_before_compiling_naming_the_key(
    teacher, tfds_data_dir, distill, match):
  distill = {"teacher_workdir": teacher, **distill}
  if "teacher_logits" in distill:
    distill["teacher_workdir"] = ""
  with pytest.raises(ValueError, match=match):
    supervised.build(student(tfds_data_dir, **distill))


def test_both_teachers_at_once_is_refused(teacher, tfds_data_dir, tmp_path):
  with pytest.raises(ValueError, match="config.distill.teacher_workdir=.* and"
                     " config.distill.teacher_logits=.*: name one teacher"):
    supervised.build(student(tfds_data_dir, teacher_workdir=teacher,
                             teacher_logits=str(tmp_path / "x.npz")))


def test_a_teacher_of_other_inputs_or_classes_is_refused(teacher, tfds_data_dir, tmp_path):
  digits = experiment("digits_distill", tfds_data_dir, teacher_logits="",
                      teacher_workdir=teacher)
  with pytest.raises(ValueError, match=r"config\.distill\.teacher_workdir=.* reads"
                     r" inputs of shape \(40,\), the student \(8, 8, 1\)"):
    supervised.build(digits)
  path = supervised.export_logits(teacher, str(tmp_path / "logits.npz"))
  with np.load(path) as f:
    logits, labels = f["logits"], f["labels"]
  wide = str(tmp_path / "wide.npz")  # 12 classes: not the student's 10
  np.savez(wide, logits=np.zeros((len(labels), 12), np.float32), labels=labels)
  with pytest.raises(ValueError, match=r"config\.distill\.teacher_logits=.* holds"
                     r" logits of shape \(4000, 12\); the train split has 4000"
                     " examples of 10 classes"):
    supervised.build(student(tfds_data_dir, teacher_logits=wide))
  shuffled = str(tmp_path / "shuffled.npz")  # rows out of the split's order
  order = np.random.default_rng(0).permutation(len(labels))
  np.savez(shuffled, logits=logits[order], labels=labels[order])
  with pytest.raises(ValueError, match=r"config\.distill\.teacher_logits=.*: its"
                     " labels differ from the train split's in order"):
    supervised.build(student(tfds_data_dir, teacher_logits=shuffled))


def test_a_tiny_teacher_teaches_a_student_from_its_workdir_and_its_logits(
    teacher, tfds_data_dir, tmp_path):
  """Both forms of the teacher train the same student: the exported logits
  are the teacher's forward pass, found again by each example's inputs."""
  from_run = train.train_and_evaluate(
      student(tfds_data_dir, teacher_workdir=teacher, temperature=4.0),
      str(tmp_path / "from_run"))
  logits = supervised.export_logits(teacher, str(tmp_path / "logits.npz"))
  from_logits = train.train_and_evaluate(
      student(tfds_data_dir, teacher_logits=logits, temperature=4.0),
      str(tmp_path / "from_logits"))
  assert from_run["final"]["step"] == from_logits["final"]["step"] == 4
  np.testing.assert_allclose(from_run["final"]["loss"], from_logits["final"]["loss"],
                             rtol=1e-4)
  records = metrics.read_records(str(tmp_path / "from_run" / "metrics.jsonl"), "train")
  assert records and all(r["soft_loss"] > 0 and r["hard_loss"] > 0 for r in records)
  # The student's run evaluates like any other (its teacher rebuilt read-only).
  result = evaluate.evaluate_checkpoint(str(tmp_path / "from_run"))
  np.testing.assert_allclose(result["accuracy"], from_run["final"]["accuracy"])


def test_the_bias_correction_picks_the_shift_that_recovers_the_left_out_class():
  """Class 2's examples lose by up to 1.5: +2 wins them all without costing
  the others, +1 too few of them, +3 takes examples of classes 0 and 1."""
  logits = np.array([[2.1, 0.0, 0.0], [2.0, 0.0, 0.5], [0.0, 2.0, -0.5],
                     [1.0, 0.0, -0.5], [1.2, 0.0, 0.0]])
  labels = np.array([0, 2, 1, 2, 2])
  shift, accuracy = distillation.best_bias_shift(logits, labels, 2, [0, 1, 2, 3])
  assert (shift, accuracy) == (2.0, 1.0)
  assert distillation.best_bias_shift(logits, labels, 2, [0])[1] == 0.4


def test_the_mnist_commands_of_the_docs_run_on_mock_data(tfds_data_dir, tmp_path):
  """docs/distillation.md's MNIST commands (the paper's experiment in kind), at
  :tiny on TFDS's mock MNIST: a 1024-1024 teacher, an 800-800 student at T = 20."""
  one = jax.devices()[:1]  # one device, as the commands on a CPU: compiles faster
  teacher = str(tmp_path / "mnist_teacher")
  train.train_and_evaluate(experiment("mnist_mlp", tfds_data_dir), teacher, one)
  config = experiment("mnist_mlp", tfds_data_dir, teacher_workdir=teacher,
                      temperature=20.0)
  with config.unlocked():
    config.model.hidden_sizes = (800, 800)
  summary = train.train_and_evaluate(config, str(tmp_path / "mnist_distilled"), one)
  assert summary["final"]["step"] > 0 and np.isfinite(summary["final"]["loss"])
