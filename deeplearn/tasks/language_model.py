"""Next-token language modelling: cross-entropy of each token given its past.

Metrics are per token: loss (nats), perplexity exp(loss), and bits per
character/token loss / ln 2, the figure char-level models are compared by.
"""

import math

import jax
import jax.numpy as jnp
import optax

from deeplearn.tasks import common


class LanguageModel:
  best_metric = ("loss", "min")

  def __init__(self, model, info):
    self.model = model
    self.info = info

  def init_variables(self, rng, batch_size: int = 1):
    inputs = jnp.zeros((batch_size, *self.info.input_shape), jnp.int32)
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng},
                           inputs, train=False)

  def _sums(self, logits, targets, weights):
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), targets)  # [batch, time]
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    weights = jnp.broadcast_to(weights[:, None], targets.shape)
    return {"loss": jnp.sum(losses * weights),
            "accuracy": jnp.sum(correct * weights),
            "count": jnp.sum(weights)}

  def loss(self, params, model_state, batch, rng):
    logits, new_state = common.apply_model(
        self.model, params, model_state, batch["inputs"], rng, train=True)
    sums = self._sums(logits, batch["targets"],
                      jnp.ones(logits.shape[0], jnp.float32))
    return sums["loss"] / sums["count"], (sums, new_state)

  def eval_sums(self, params, model_state, batch):
    logits, _ = common.apply_model(
        self.model, params, model_state, batch["inputs"], None, train=False)
    return self._sums(logits, batch["targets"], batch["mask"])

  def finalize(self, sums):
    metrics = common.finalize_mean(sums)
    metrics["perplexity"] = jnp.exp(metrics["loss"])
    metrics["bits_per_token"] = metrics["loss"] / math.log(2)
    return metrics
