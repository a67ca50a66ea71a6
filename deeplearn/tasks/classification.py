"""Supervised classification: softmax cross-entropy on integer labels."""

import jax
import jax.numpy as jnp
import optax

from deeplearn.tasks import common


class Classification:
  best_metric = ("accuracy", "max")

  def __init__(self, model, info):
    self.model = model
    self.info = info

  def init_variables(self, rng, batch_size: int = 1):
    inputs = jnp.zeros((batch_size, *self.info.input_shape), jnp.float32)
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng},
                           inputs, train=False)

  def _sums(self, logits, labels, weights):
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"loss": jnp.sum(losses * weights),
            "accuracy": jnp.sum(correct * weights),
            "count": jnp.sum(weights)}

  def loss(self, params, model_state, batch, rng):
    logits, new_state = common.apply_model(
        self.model, params, model_state, batch["inputs"], rng, train=True)
    sums = self._sums(logits, batch["label"], jnp.ones(logits.shape[0]))
    return sums["loss"] / sums["count"], (sums, new_state)

  def eval_sums(self, params, model_state, batch):
    logits, _ = common.apply_model(
        self.model, params, model_state, batch["inputs"], None, train=False)
    return self._sums(logits, batch["label"], batch["mask"])

  def finalize(self, sums):
    return common.finalize_mean(sums)
