"""Next-token language modelling: cross-entropy of each token given its past.

Batches: `inputs` and `targets` int32 [batch, time], targets = inputs shifted
by one. Metrics are per token: loss (nats), accuracy, perplexity exp(loss)
and bits per token loss / ln 2, the figure char-level models are compared by.

A model with a large-vocabulary output layer (`output` "sampled" or
"hierarchical", deeplearn/models/softmax.py) returns its training loss per
token when given `targets`: training minimises that (sampled softmax: a
consistent, biased estimate of the cross-entropy, reported as `loss`), while
evaluation scores the full softmax, or hierarchical softmax's exact
log-probabilities, so validation perplexities compare across outputs.
"""

import math

import jax
import jax.numpy as jnp

from deeplearn.tasks.common import CrossEntropyTask


class LanguageModel(CrossEntropyTask):
  target_key = "targets"
  input_dtype = jnp.int32
  best_metric = ("loss", "min")

  def loss(self, params, model_state, batch, rng):
    if getattr(self.model, "output", "softmax") == "softmax":
      return super().loss(params, model_state, batch, rng)
    losses, new_state = self.model.apply(  # [batch, time]
        {"params": params, **model_state}, batch["inputs"], train=True,
        targets=batch["targets"], mutable=list(model_state),
        rngs={"dropout": rng, "sample": jax.random.fold_in(rng, 1)})
    sums = {"loss": jnp.sum(losses), "count": jnp.asarray(losses.size, jnp.float32)}
    return sums["loss"] / sums["count"], (sums, dict(new_state))

  def finalize(self, sums):
    metrics = super().finalize(sums)
    metrics["perplexity"] = jnp.exp(metrics["loss"])
    metrics["bits_per_token"] = metrics["loss"] / math.log(2)
    return metrics
