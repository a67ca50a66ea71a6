"""Cascades: supervised training of a staged model, evaluated as a calibrated cascade.

Training is the supervised scheme's, unchanged: the `cascade` task's joint loss
(deeplearn/tasks/cascade.py) on a staged model (deeplearn/models/cascade.py). Each
evaluation then (1) runs the model on `config.cascade.calibration_split` and picks
the cheapest thresholds whose accuracy is within `tolerance` of the last stage's
(tasks.cascade.calibrate), (2) applies them to the eval split and reports, beside
every stage's own accuracy: `cascade_accuracy`, `cascade_flops` (average XLA FLOPs
per example), `baseline_flops` (the last stage alone on every example),
`flops_saved` (1 - their ratio), `exit<k>_fraction` and `threshold<k>`
(2.0: the stage never answers). With `reject_class` (detection): `recall` and
`cascade_recall`, the digits read right; with `group_size`: `canvas_accuracy` and
`cascade_canvas_accuracy`, the groups (canvases) read entirely right. At the end
WORKDIR/cascade.json holds the chosen point and every threshold combination.

config.cascade (the experiment adds it):
  calibration_split  the split thresholds are chosen on, disjoint from train_split
                     and eval_split (digits: "train[1137:]" with train "train[:1137]")
  tolerance          accuracy the cascade may lose against the last stage (0.005)
  thresholds         the grid each stage's threshold is searched over
  reject_class       -1: any stage answers any class; c >= 0: early stages only
                     answer c (reject: the background of a detection cascade)
  group_size         > 0: consecutive eval examples form a group (a canvas's windows)
  bucket_size        examples per bucket of deeplearn.models.cascade.compact_predict
"""

import dataclasses
import json
import os

import jax
import numpy as np

from deeplearn import data, files, step as step_lib
from deeplearn.config import did_you_mean
from deeplearn.data import tfds_io
from deeplearn.models import cascade as staged
from deeplearn.schemes.supervised import Supervised
from deeplearn.tasks import cascade as cascade_lib
from deeplearn.tasks.common import apply_model

GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
DEFAULTS = {"calibration_split": "", "tolerance": 0.005, "thresholds": GRID,
            "reject_class": -1, "group_size": 0, "bucket_size": 32}


@dataclasses.dataclass(frozen=True)
class Settings:
  calibration_split: str
  tolerance: float
  thresholds: tuple
  reject_class: int
  group_size: int
  bucket_size: int


def settings(config) -> Settings:
  """config.cascade with its defaults, checked before anything is built."""
  if "cascade" not in config:
    raise ValueError("config.cascade is missing: the cascade scheme needs at least"
                     " config.cascade.calibration_split (docs/cascades.md).")
  given = config.cascade.to_dict()
  for key in given:
    if key not in DEFAULTS:
      raise ValueError(f"config.cascade.{key} is not a cascade setting;"
                       f" {did_you_mean(key, DEFAULTS)}use one of {sorted(DEFAULTS)}.")
  s = Settings(**{**DEFAULTS, **given})
  split = s.calibration_split
  if not split or split in (config.data.train_split, config.data.eval_split):
    raise ValueError(
        f"config.cascade.calibration_split={split!r} must name a split apart from"
        f" config.data.train_split={config.data.train_split!r} and eval_split"
        f"={config.data.eval_split!r}, e.g. 'train[1137:]' with train_split 'train[:1137]'.")
  if not 0 <= s.tolerance < 1:
    raise ValueError(f"config.cascade.tolerance={s.tolerance} must be in [0, 1):"
                     " the accuracy the cascade may lose, 0.005 for half a point.")
  grid = tuple(s.thresholds)
  if not grid or any(not 0 <= t <= 1 for t in grid) or list(grid) != sorted(set(grid)):
    raise ValueError(f"config.cascade.thresholds={grid} must be probabilities in [0, 1],"
                     " increasing, at least one.")
  for key in ("group_size", "bucket_size"):
    low = 1 if key == "bucket_size" else 0
    if int(getattr(s, key)) != getattr(s, key) or getattr(s, key) < low:
      raise ValueError(f"config.cascade.{key}={getattr(s, key)} must be an integer"
                       f" >= {low}.")
  return dataclasses.replace(s, thresholds=grid)


class Cascade(Supervised):
  """config.scheme = "cascade"; config.task = "cascade"."""

  def __init__(self, config, devices=None):
    self.settings = s = settings(config)
    if config.task != "cascade":
      raise ValueError(f"config.task={config.task!r}: the cascade scheme trains"
                       " config.task='cascade'.")
    if jax.process_count() > 1:
      raise ValueError("config.scheme: the cascade scheme calibrates on one process's"
                       f" probabilities; run it on one process, not {jax.process_count()}.")
    super().__init__(config, devices)
    model, info = self.run.task.model, self.run.info
    if not -1 <= s.reject_class < info.num_classes:
      raise ValueError(f"config.cascade.reject_class={s.reject_class} must be -1 or a"
                       f" class of {info.name} (0..{info.num_classes - 1}).")
    count = (len(s.thresholds) + 1) ** (model.num_stages - 1)
    if count > cascade_lib.MAX_COMBINATIONS:
      raise ValueError(
          f"config.cascade.thresholds has {len(s.thresholds)} values: with"
          f" {model.num_stages} stages calibration would try {count:,} combinations"
          f" (at most {cascade_lib.MAX_COMBINATIONS:,}); use a shorter grid.")
    if s.bucket_size > config.data.eval_batch_size:
      raise ValueError(f"config.cascade.bucket_size={s.bucket_size} is larger than"
                       f" config.data.eval_batch_size={config.data.eval_batch_size}.")
    tfds_io.checked_source(tfds_io.open_builder(config.data), s.calibration_split,
                           "config.cascade.calibration_split")
    self._calibration_ds = data.eval_dataset(
        config.data, split=s.calibration_split, process_index=jax.process_index(),
        process_count=jax.process_count())
    self._probs = step_lib.jit_step(
        self._probs_fn, self.run.mesh,
        (self.run.state_shardings, self.run.batch_sharding), donate=False,
        kernels=config.get("kernels"))
    self._flops = self._report = None

  def _probs_fn(self, state, batch):
    params = state.params if state.avg_params is None else state.avg_params
    logits, _, _ = apply_model(self.run.task.model, params, state.model_state,
                               batch["inputs"], None, train=False)
    return jax.nn.softmax(logits, axis=-1)  # [stages, batch, classes]

  def probabilities(self, state, dataset):
    """Every stage's softmax over a split: ([stages, N, classes], labels [N])."""
    probs, labels = [], []
    for batch in dataset:
      got = np.asarray(jax.device_get(self._probs(state, batch)))
      real = np.asarray(batch["mask"]) > 0
      probs.append(got[:, real])
      labels.append(np.asarray(batch["label"])[real])
    return np.concatenate(probs, 1), np.concatenate(labels)

  def stage_flops(self, state):
    """(FLOPs per example of each stage, of the last stage alone), counted once."""
    if self._flops is None:
      variables = {"params": state.params, **state.model_state}
      self._flops = staged.stage_flops(self.run.task.model, variables,
                                       self.run.info.input_shape)
    return self._flops

  def evaluate(self, state) -> dict[str, float]:
    s = self.settings
    metrics = super().evaluate(state)
    flops, baseline = self.stage_flops(state)
    chosen = cascade_lib.calibrate(*self.probabilities(state, self._calibration_ds),
                                   flops, s.thresholds, s.tolerance, s.reject_class)
    probs, labels = self.probabilities(state, self._eval_ds)
    test = cascade_lib.outcome(probs, labels, chosen["thresholds"], flops, s.reject_class)
    last = probs[-1].argmax(-1)
    metrics.update({"cascade_accuracy": test["accuracy"], "cascade_flops": test["flops"],
                    "baseline_flops": float(baseline),
                    "flops_saved": 1.0 - test["flops"] / float(baseline)})
    for k, fraction in enumerate(test["exit_fractions"]):
      metrics[f"exit{k}_fraction"] = float(fraction)
    for k, t in enumerate(chosen["thresholds"]):
      metrics[f"threshold{k}"] = t
    if s.reject_class >= 0:
      metrics["recall"] = cascade_lib.target_accuracy(last, labels, s.reject_class)
      metrics["cascade_recall"] = test["target"]
    if s.group_size:
      metrics["canvas_accuracy"] = cascade_lib.groups_correct(last, labels, s.group_size)
      metrics["cascade_canvas_accuracy"] = cascade_lib.groups_correct(
          test["pred"], labels, s.group_size)
    points = [{k: v for k, v in cascade_lib.outcome(probs, labels, combo, flops,
                                                    s.reject_class).items() if k != "pred"}
              for combo in cascade_lib.combinations(s.thresholds, len(probs))]
    self._report = {"metrics": metrics, "stage_flops": [float(f) for f in flops],
                    "chosen": {k: v for k, v in chosen.items() if k != "pred"},
                    "points": points}
    return metrics

  def finish(self, state, workdir: str, summary: dict) -> dict:
    if self._report is None:
      self.evaluate(state)
    path = os.path.join(workdir, "cascade.json")
    if jax.process_index() == 0:
      files.write_atomic(path, json.dumps(self._report, default=_plain, indent=1))
    return {**super().finish(state, workdir, summary),
            "cascade_flops": self._report["metrics"]["cascade_flops"],
            "cascade_accuracy": self._report["metrics"]["cascade_accuracy"]}


def _plain(value):
  """json.dumps's fallback: numpy arrays and scalars as lists and floats."""
  return np.asarray(value).tolist()
