"""Supervised classification: softmax cross-entropy on integer labels.

Batches: `inputs` float32 [batch, ...], `label` int32 [batch].
"""

import jax.numpy as jnp

from deeplearn.tasks.common import CrossEntropyTask


class Classification(CrossEntropyTask):
  target_key = "label"
  input_dtype = jnp.float32
  best_metric = ("accuracy", "max")
