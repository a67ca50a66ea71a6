"""Pieces shared by the tasks: running a flax model with its state, and the
softmax cross-entropy task that classification and language modelling share."""

import jax
import jax.numpy as jnp
import optax


def apply_model(model, params, model_state, inputs, rng, train: bool):
  """Runs the model; in training, mutable collections (batch_stats) update."""
  variables = {"params": params, **model_state}
  rngs = {"dropout": rng} if rng is not None else {}
  if train and model_state:
    outputs, new_state = model.apply(variables, inputs, train=True, rngs=rngs,
                                     mutable=list(model_state))
    return outputs, dict(new_state)
  return model.apply(variables, inputs, train=train, rngs=rngs), model_state


def finalize_mean(sums) -> dict:
  count = jnp.maximum(sums["count"], 1)
  return {k: v / count for k, v in sums.items() if k != "count"}


class CrossEntropyTask:
  """Softmax cross-entropy on integer targets `batch[target_key]`.

  Targets may carry extra axes (tokens in a sequence); a batch's `mask`
  [batch] weighs whole examples. Sums count every target position.
  """
  target_key: str
  input_dtype: jnp.dtype
  best_metric: tuple[str, str]

  def __init__(self, model, info):
    self.model = model
    self.info = info

  def init_variables(self, rng, batch_size: int = 1):
    inputs = jnp.zeros((batch_size, *self.info.input_shape), self.input_dtype)
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng},
                           inputs, train=False)

  def _sums(self, logits, targets, weights):
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), targets)  # targets.shape
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    weights = jnp.broadcast_to(
        weights.reshape(weights.shape + (1,) * (targets.ndim - 1)),
        targets.shape)
    return {"loss": jnp.sum(losses * weights),
            "accuracy": jnp.sum(correct * weights),
            "count": jnp.sum(weights)}

  def loss(self, params, model_state, batch, rng):
    logits, new_state = apply_model(
        self.model, params, model_state, batch["inputs"], rng, train=True)
    targets = batch[self.target_key]
    sums = self._sums(logits, targets, jnp.ones(targets.shape[0], jnp.float32))
    return sums["loss"] / sums["count"], (sums, new_state)

  def eval_sums(self, params, model_state, batch):
    logits, _ = apply_model(
        self.model, params, model_state, batch["inputs"], None, train=False)
    return self._sums(logits, batch[self.target_key], batch["mask"])

  def finalize(self, sums):
    return finalize_mean(sums)
