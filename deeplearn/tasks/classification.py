"""Supervised classification: softmax cross-entropy on integer labels.

Batches: `inputs` float32 [batch, ...], `label` int32 [batch].

Auxiliary classifiers (GoogLeNet's side heads, deeplearn.models.inception): in
training a model may sow (weight, logits) pairs into the "aux_logits" collection;
the training loss is then main + sum of weight x auxiliary cross-entropy, each
auxiliary loss also reported alone (`aux1_loss`, ...). Evaluation, and accuracy,
use the main logits only. See CrossEntropyTask.loss in deeplearn.tasks.common.
"""

import jax.numpy as jnp

from deeplearn.tasks.common import CrossEntropyTask


class Classification(CrossEntropyTask):
  target_key = "label"
  input_dtype = jnp.float32
  best_metric = ("accuracy", "max")
