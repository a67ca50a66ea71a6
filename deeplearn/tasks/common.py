"""Pieces shared by the tasks: running a flax model with its state, and the
softmax cross-entropy task that classification and language modelling share."""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax


# A model may `sow` (weight, logits) pairs into this collection in training:
# auxiliary classifiers (GoogLeNet's side heads) whose cross-entropy on the same
# targets the loss adds, times weight. Evaluation never sees them.
AUX_LOGITS = "aux_logits"
# And (weight, value) pairs of scalar losses the model computes itself (the
# mixture of experts' load-balancing loss): the loss adds weight x value, and
# each is reported as a metric under its name; weight 0 only reports it.
AUX_LOSSES = "aux_loss"


def apply_model(model, params, model_state, inputs, rng, train: bool):
  """Runs the model -> (outputs, new model state, aux).

  In training, mutable collections (batch_stats) update and `aux` is what the
  model sowed into AUX_LOGITS and AUX_LOSSES, {collection: {name: ((weight,
  array), ...)}}; else {}.
  """
  variables = {"params": params, **model_state}
  rngs = {"dropout": rng} if rng is not None else {}
  if not train:
    return model.apply(variables, inputs, train=False, rngs=rngs), model_state, {}
  outputs, new_state = model.apply(variables, inputs, train=True, rngs=rngs,
                                   mutable=[*model_state, AUX_LOGITS, AUX_LOSSES])
  new_state = dict(new_state)
  return outputs, new_state, {c: new_state.pop(c, {})
                              for c in (AUX_LOGITS, AUX_LOSSES)}


def finalize_mean(sums) -> dict:
  count = jnp.maximum(sums["count"], 1)
  return {k: v / count for k, v in sums.items() if k != "count"}


# eq=False: identity hashing, so that jax.jit(task.loss) can hash the method.
@dataclasses.dataclass(frozen=True, eq=False)
class Task:
  """What every task holds. Immutable: a step form that needs another model
  (synchronised batch norm) takes `dataclasses.replace(task, model=...)`."""
  model: object
  info: object  # the dataset's DatasetInfo
  label_smoothing: float = 0.0

  def __post_init__(self):  # a subclass's checks of its fields
    pass


class CrossEntropyTask(Task):
  """Softmax cross-entropy on integer targets `batch[target_key]`.

  Targets may carry extra axes (tokens in a sequence); a batch's `mask`
  [batch] weighs whole examples. Sums count every target position.
  `label_smoothing` s trains on (1 - s) one-hot + s / classes targets; the
  training `loss` is that objective, evaluation's the plain cross-entropy.
  """
  target_key: ClassVar[str]
  input_dtype: ClassVar[jnp.dtype]
  best_metric: ClassVar[tuple[str, str]]

  def init_variables(self, rng, batch_size: int = 1):
    inputs = jnp.zeros((batch_size, *self.info.input_shape), self.input_dtype)
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng},
                           inputs, train=False)

  def sums(self, logits, targets, weights, smoothing=0.0):
    """Summed cross-entropy, correct predictions and weights of logits
    [..., classes] against integer targets, examples weighted by `weights`."""
    logits = logits.astype(jnp.float32)
    if smoothing:
      soft = optax.smooth_labels(
          jax.nn.one_hot(targets, logits.shape[-1]), smoothing)
      losses = optax.softmax_cross_entropy(logits, soft)  # targets.shape
    else:
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    weights = jnp.broadcast_to(
        weights.reshape(weights.shape + (1,) * (targets.ndim - 1)),
        targets.shape)
    return {"loss": jnp.sum(losses * weights),
            "accuracy": jnp.sum(correct * weights),
            "count": jnp.sum(weights)}

  def loss(self, params, model_state, batch, rng):
    """Mean cross-entropy of the outputs plus, for every auxiliary head the
    model sowed, weight x its mean cross-entropy (also reported alone as
    `<head>_loss`), plus weight x every auxiliary loss it sowed (reported
    as `<name>`). Accuracy is the main head's."""
    logits, new_state, aux = apply_model(
        self.model, params, model_state, batch["inputs"], rng, train=True)
    targets = batch[self.target_key]
    ones = jnp.ones(targets.shape[0], jnp.float32)
    smoothing = self.label_smoothing
    sums = self.sums(logits, targets, ones, smoothing)
    for name, pairs in sorted(aux[AUX_LOGITS].items()):
      for weight, aux_logits in pairs:
        aux_loss = self.sums(aux_logits, targets, ones, smoothing)["loss"]
        sums[f"{name}_loss"] = sums.get(f"{name}_loss", 0.0) + aux_loss
        sums["loss"] = sums["loss"] + weight * aux_loss
    for name, pairs in sorted(aux[AUX_LOSSES].items()):
      for weight, value in pairs:  # a mean: times count, as a sum
        value = value.astype(jnp.float32) * sums["count"]
        sums[name] = sums.get(name, 0.0) + value
        sums["loss"] = sums["loss"] + weight * value
    return sums["loss"] / sums["count"], (sums, new_state)

  def eval_sums(self, params, model_state, batch):
    logits, _, _ = apply_model(
        self.model, params, model_state, batch["inputs"], None, train=False)
    return self.sums(logits, batch[self.target_key], batch["mask"])

  def finalize(self, sums):
    return finalize_mean(sums)
