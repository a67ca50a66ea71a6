"""Cascades: the joint training objective of a staged model, and its thresholds.

Training (deeplearn/models/cascade.py: `cascade`, `early_exit_convnet`): the model
returns every stage's logits, [stages, batch, classes]; the loss is the sum of the
stages' mean cross-entropies, so all stages train together in one ordinary run
(BranchyNet's joint objective, equal weights). Metrics: `stage<k>_loss`,
`stage<k>_accuracy`, and `accuracy` / `loss` of the last stage (the best metric).

Inference (what the functions below compute, in numpy, from the stages'
softmax probabilities [stages, examples, classes]): stage k < last answers an
example when its top probability is at least thresholds[k] (and, with
`reject_class` >= 0, a detection cascade's, only when it predicts that class: early
stages only reject); the last stage answers the rest. An example answered by stage
k costs the FLOPs of stages 0..k.

Calibration (`calibrate`) searches every combination of thresholds from a grid, on
a validation split, for the cheapest one whose accuracy is within `tolerance` of the
last stage's alone. With `reject_class` the accuracy is over the examples of the
other classes (the rare objects: a rejected digit is the error that matters).
"""

import itertools
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from deeplearn.tasks.common import CrossEntropyTask, apply_model

NEVER = 2.0  # a threshold no probability clears: the stage never answers
MAX_COMBINATIONS = 20_000


class Cascade(CrossEntropyTask):
  """config.task = "cascade": a staged model's joint cross-entropy."""
  target_key: ClassVar[str] = "label"
  input_dtype: ClassVar = jnp.float32
  best_metric: ClassVar[tuple[str, str]] = ("accuracy", "max")

  def __post_init__(self):
    if not hasattr(self.model, "stage"):
      raise ValueError(
          f"config.task='cascade' needs a staged model (config.model.name='cascade'"
          f" or 'early_exit_convnet'), not {type(self.model).__name__}.")
    self.model.check()

  def _sums(self, logits, targets, weights, smoothing):
    sums = {}
    for k in range(logits.shape[0]):
      stage = self.sums(logits[k], targets, weights, smoothing)
      sums[f"stage{k}_loss"], sums[f"stage{k}_accuracy"] = stage["loss"], stage["accuracy"]
    # The last stage's accuracy is the cascade's ceiling: the best metric.
    return {**sums, **stage, "last_loss": stage["loss"],
            "loss": sum(sums[f"stage{k}_loss"] for k in range(logits.shape[0]))}

  def loss(self, params, model_state, batch, rng):
    logits, new_state, _ = apply_model(  # [stages, batch, classes]
        self.model, params, model_state, batch["inputs"], rng, train=True)
    targets = batch[self.target_key]
    sums = self._sums(logits, targets, jnp.ones(targets.shape[0], jnp.float32),
                      self.label_smoothing)
    return sums["loss"] / sums["count"], (sums, new_state)

  def eval_sums(self, params, model_state, batch):
    logits, _, _ = apply_model(
        self.model, params, model_state, batch["inputs"], None, train=False)
    return self._sums(logits, batch[self.target_key], batch["mask"], 0.0)


def first_exits(probs, thresholds, reject_class: int = -1):
  """(prediction [N], exit stage [N]) of the cascade over probs [stages, N, classes]."""
  return _first_exits(probs.argmax(-1), probs.max(-1), thresholds, reject_class)


def _first_exits(pred, conf, thresholds, reject_class):
  # pred, conf: [stages, N]. float32 thresholds, as the jitted `exits` compares.
  ok = conf[:-1] >= np.asarray(thresholds, np.float32)[:, None]
  if reject_class >= 0:
    ok &= pred[:-1] == reject_class
  stage = np.concatenate([ok, np.ones((1, pred.shape[1]), bool)]).argmax(0)
  return pred[stage, np.arange(pred.shape[1])], stage


def target_accuracy(pred, labels, reject_class: int = -1) -> float:
  """Accuracy over all examples, or with reject_class over the other classes'."""
  keep = labels != reject_class if reject_class >= 0 else np.ones(len(labels), bool)
  return float(np.mean(pred[keep] == labels[keep])) if keep.any() else 1.0


def outcome(probs, labels, thresholds, flops, reject_class: int = -1) -> dict:
  """The cascade at `thresholds` ([stages - 1]): accuracy, the calibration target
  (`target`), average FLOPs per example and the fraction answered by each stage."""
  return _outcome(probs.argmax(-1), probs.max(-1), labels, thresholds, flops, reject_class)


def _outcome(pred, conf, labels, thresholds, flops, reject_class):
  pred, stage = _first_exits(pred, conf, thresholds, reject_class)
  cost = np.cumsum(flops)[stage]  # stages 0..k ran
  return {"accuracy": float(np.mean(pred == labels)),
          "target": target_accuracy(pred, labels, reject_class),
          "flops": float(np.mean(cost)),
          "exit_fractions": np.bincount(stage, minlength=len(flops)) / len(labels),
          "pred": pred, "thresholds": tuple(float(t) for t in thresholds)}


def combinations(grid, num_stages: int) -> list[tuple]:
  """Every threshold combination calibrate tries: the grid and NEVER, per stage."""
  values = sorted(set(float(t) for t in grid)) + [NEVER]
  return list(itertools.product(values, repeat=num_stages - 1))


def calibrate(probs, labels, flops, grid, tolerance: float,
              reject_class: int = -1) -> dict:
  """The cheapest thresholds whose target accuracy on (probs, labels) is at least
  the last stage's minus `tolerance`; ties go to the more accurate, then to the
  first in `combinations` order. Returns outcome(...) plus `thresholds` and
  `last_target` (the last stage's target accuracy alone). NEVER everywhere (every
  example through every stage) always qualifies."""
  pred, conf = probs.argmax(-1), probs.max(-1)
  last = target_accuracy(pred[-1], labels, reject_class)
  best = None
  for combo in combinations(grid, len(probs)):
    result = _outcome(pred, conf, labels, combo, flops, reject_class)
    if result["target"] < last - tolerance - 1e-12:
      continue
    key = (result["flops"], -result["target"])
    if best is None or key < best[0]:
      best = key, result
  return {**best[1], "last_target": last}


def pareto(points: list[dict]) -> list[dict]:
  """The points (dicts with `flops` and `accuracy`) no other beats on both, by FLOPs."""
  front, best = [], -1.0
  for p in sorted(points, key=lambda p: (p["flops"], -p["accuracy"])):
    if p["accuracy"] > best:
      front.append(p)
      best = p["accuracy"]
  return front


def groups_correct(pred, labels, group_size: int) -> float:
  """Fraction of groups (a canvas's windows, in order) whose every example is right."""
  n = len(labels) // group_size * group_size
  right = (pred[:n] == labels[:n]).reshape(-1, group_size)
  return float(right.all(1).mean())
