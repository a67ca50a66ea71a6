"""Knowledge distillation: a small student trained on a big teacher's softened outputs.

The lecture's "model compression" (Hinton, Vinyals & Dean 2015, "Distilling the
Knowledge in a Neural Network"). The student's loss on a batch is

  alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)

with z_t the teacher's logits, z_s the student's and T the temperature. The soft
term's gradients scale as 1 / T^2, hence the T^2 (the paper, section 2): the
balance between the two terms then stays put as T changes. As T -> infinity the
soft term's gradient w.r.t. z_s tends to (z_s - z_t) / N for zero-mean logits
over N classes: distillation becomes the logit matching of Caruana and Ba
(section 2.1; `tests/test_distill.py` checks both forms).

Why a task and not a scheme: distillation changes only the loss. The student's
model, optimizer chain, data, every step form (jit, shard_map towers, local
SGD, gradient accumulation), the loop and its checkpoints stay the supervised
ones. `deeplearn.schemes.supervised.build` wraps the student's classification
task in `Distillation` when config.distill names a teacher, in one of two forms:

- a finished run's workdir: its model, and its variables restored read-only,
  checked against their checksums. The variables live in the train state's
  model state under TEACHER, so they enter the jitted step as inputs laid out
  on the student's mesh by their own logical axis names, receive no gradient
  (only `params` are differentiated) and come out unchanged; the teacher's
  forward pass runs inside the student's step on the very batch the student
  sees. Each student checkpoint thus holds the exact teacher it was trained
  against. The init function makes zeros in their place and the scheme puts
  the restored values there (`initial_model_state`), rather than closing over
  them: that would embed a big teacher's weights in the compiled init program
  as constants.
- precomputed logits (`LogitsTable`): a .npz of the teacher's logits over the
  train split, added to each batch on the host (`prepare_batch`) and looked up
  by the example's content, so no index has to travel with the batch.

The transfer-set experiment of the paper (section 3: "omitted all examples of
the digit 3 from the transfer set") is `omit_class`: examples of that class
weigh nothing in either term, so the student learns about it only from the
teacher's soft outputs on the other classes; `best_bias_shift` is the paper's
correction afterwards (raise that class's bias by a constant).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from deeplearn.tasks.classification import Classification
from deeplearn.tasks.common import apply_model

TEACHER = "distill_teacher"  # the model-state collection holding the teacher's variables
LOGITS_KEY = "teacher_logits"  # the batch key of precomputed logits [batch, classes]


def soft_loss(student_logits, teacher_logits, temperature: float):
  """T^2 * KL(softmax(teacher / T) || softmax(student / T)) per example [batch].

  optax's KL with log targets: a teacher's probabilities that underflow to 0
  stay finite (no log(0) of the targets)."""
  t = temperature
  return t * t * optax.losses.kl_divergence_with_log_targets(
      jax.nn.log_softmax(student_logits.astype(jnp.float32) / t),
      jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t))


@dataclasses.dataclass(frozen=True, eq=False)
class LogitsTable:
  """A teacher's precomputed logits over the train split, found by content.

  `rows` maps each training example's inputs (as the training batches carry
  them: pp_train applied, float32 bytes) to its row of `logits`. Alignment
  with the split is checked when the table is built (`read_logits`): the
  file's labels must equal the split's, in order; a batch example that is not
  in the table fails naming the key."""
  logits: np.ndarray  # [examples, classes] float32
  rows: dict  # inputs bytes -> row
  key: str

  def lookup(self, inputs: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(inputs, np.float32).reshape(len(inputs), -1)
    try:
      idx = [self.rows[x.tobytes()] for x in flat]
    except KeyError:
      raise ValueError(
          f"{self.key}: a training example is not in the train split the logits"
          " were read against (random pp_train ops, or another dataset?).") from None
    return self.logits[idx]


def read_logits(path: str, split_batches, num_classes: int, key: str) -> LogitsTable:
  """The LogitsTable of the .npz at `path` (`logits` [N, classes], `labels` [N]:
  what `export_logits` writes), checked against the split read in order
  (`split_batches`: batches with `inputs`, `label`, `mask`)."""
  try:
    with np.load(path) as f:
      logits, labels = np.asarray(f["logits"], np.float32), np.asarray(f["labels"])
  except (OSError, KeyError, ValueError) as e:
    raise ValueError(f"{key}={path!r} is not a readable .npz with `logits` and"
                     f" `labels` ({e}); write one with"
                     " deeplearn.schemes.supervised.export_logits.") from e
  inputs, split_labels = [], []
  for b in split_batches:
    real = np.asarray(b["mask"]) > 0
    inputs.append(np.asarray(b["inputs"], np.float32)[real])
    split_labels.append(np.asarray(b["label"])[real])
  inputs, split_labels = np.concatenate(inputs), np.concatenate(split_labels)
  if logits.ndim != 2 or logits.shape != (len(split_labels), num_classes):
    raise ValueError(f"{key}={path!r} holds logits of shape {logits.shape}; the"
                     f" train split has {len(split_labels)} examples of"
                     f" {num_classes} classes.")
  if labels.shape != split_labels.shape or np.any(labels != split_labels):
    raise ValueError(f"{key}={path!r}: its labels differ from the train split's"
                     " in order: the logits are not aligned with this split.")
  flat = inputs.reshape(len(inputs), -1)
  rows = {}
  for i in range(len(flat) - 1, -1, -1):  # duplicates: the first row wins
    rows[flat[i].tobytes()] = i
  return LogitsTable(logits=logits, rows=rows, key=key)


@dataclasses.dataclass(frozen=True, eq=False)
class Distillation(Classification):
  """Classification of `model` (the student) taught by a teacher.

  Fields beyond the student's: temperature T > 0, alpha in [0, 1] (the soft
  term's weight), and one teacher: `teacher_model` with `teacher_variables`
  (restored values) and `teacher_boxes` (their shapes boxed with logical axis
  names: the state's layout), or `logits` (a LogitsTable). `omit_class` >= 0
  leaves that class out of the transfer set. Evaluation is the student's
  alone."""
  temperature: float = 1.0
  alpha: float = 0.5
  teacher_model: Any = None
  teacher_variables: Any = None
  teacher_boxes: Any = None
  logits: LogitsTable | None = None
  omit_class: int = -1

  def __post_init__(self):
    if (self.teacher_model is None) == (self.logits is None):
      raise ValueError("Distillation needs exactly one teacher: a model with its"
                       " variables, or a LogitsTable.")

  def init_variables(self, rng, batch_size: int = 1):
    variables = dict(super().init_variables(rng, batch_size))
    if self.teacher_model is not None:  # zeros, until initial_model_state
      variables[TEACHER] = jax.tree.map(
          lambda box: box.replace_boxed(jnp.zeros(box.value.shape, box.value.dtype))
          if isinstance(box, nn.meta.AxisMetadata) else jnp.zeros(box.shape, box.dtype),
          self.teacher_boxes, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
    return variables

  def initial_model_state(self, model_state):
    """The init's model state with the restored teacher in place."""
    if self.teacher_model is None:
      return model_state
    return {**model_state, TEACHER: self.teacher_variables}

  def prepare_batch(self, batch):
    """Adds the precomputed teacher logits of a host batch (else unchanged)."""
    if self.logits is None:
      return batch
    return {**batch, LOGITS_KEY: self.logits.lookup(batch["inputs"])}

  def teacher_logits(self, teacher_state, batch):
    """z_t [batch, classes]: no gradient flows back to the teacher."""
    if self.teacher_model is None:
      return batch[LOGITS_KEY]
    logits, _, _ = apply_model(self.teacher_model, teacher_state["params"],
                               {k: v for k, v in teacher_state.items() if k != "params"},
                               batch["inputs"], None, train=False)
    return jax.lax.stop_gradient(logits)

  def loss(self, params, model_state, batch, rng):
    """The weighted soft + hard loss, mean over the transfer set's examples
    in the batch; `soft_loss` and `hard_loss` reported alone. Auxiliary
    heads or losses a student sows (CrossEntropyTask.loss) are not used."""
    own = {k: v for k, v in model_state.items() if k != TEACHER}
    logits, new_state, _ = apply_model(self.model, params, own, batch["inputs"],
                                       rng, train=True)
    labels = batch["label"]
    weights = jnp.ones(labels.shape, jnp.float32)
    if self.omit_class >= 0:
      weights = (labels != self.omit_class).astype(jnp.float32)
    sums = self.sums(logits, labels, weights, self.label_smoothing)
    teacher = self.teacher_logits(model_state.get(TEACHER), batch)
    soft = jnp.sum(soft_loss(logits, teacher, self.temperature) * weights)
    hard = sums["loss"]
    sums = {**sums, "loss": self.alpha * soft + (1 - self.alpha) * hard,
            "soft_loss": soft, "hard_loss": hard}
    if TEACHER in model_state:
      new_state = {**new_state, TEACHER: model_state[TEACHER]}
    return sums["loss"] / jnp.maximum(sums["count"], 1.0), (sums, new_state)

  def eval_sums(self, params, model_state, batch):
    own = {k: v for k, v in model_state.items() if k != TEACHER}
    return super().eval_sums(params, own, batch)


def best_bias_shift(logits: np.ndarray, labels: np.ndarray, cls: int,
                    shifts) -> tuple[float, float]:
  """(shift, accuracy): the constant added to class `cls`'s logit (its output
  bias) that gives the best overall accuracy on (logits, labels), the first
  of equals. The paper chose +3.5 for the omitted 3s on MNIST's test set;
  choose it on a validation split and report the test split."""
  best = None
  for shift in shifts:
    z = np.array(logits, np.float64)
    z[:, cls] += shift
    accuracy = float(np.mean(z.argmax(1) == labels))
    if best is None or accuracy > best[1]:
      best = (float(shift), accuracy)
  return best
