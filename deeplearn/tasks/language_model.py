"""Next-token language modelling: cross-entropy of each token given its past.

Batches: `inputs` and `targets` int32 [batch, time], targets = inputs shifted
by one. Metrics are per token: loss (nats), accuracy, perplexity exp(loss)
and bits per token loss / ln 2, the figure char-level models are compared by.
"""

import math

import jax.numpy as jnp

from deeplearn.tasks.common import CrossEntropyTask


class LanguageModel(CrossEntropyTask):
  target_key = "targets"
  input_dtype = jnp.int32
  best_metric = ("loss", "min")

  def finalize(self, sums):
    metrics = super().finalize(sums)
    metrics["perplexity"] = jnp.exp(metrics["loss"])
    metrics["bits_per_token"] = metrics["loss"] / math.log(2)
    return metrics
