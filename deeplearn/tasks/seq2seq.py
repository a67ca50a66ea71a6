"""Sequence to sequence: teacher-forced cross-entropy per target token; greedy
decoding in evaluation.

Batches (deeplearn.data.pipeline, a `source`/`target` dataset such as `dates`,
or a translation one such as `wmt14_translate/de-en` in subwords): `inputs`
int32 [batch, source] and `targets` int32 [batch, target] (the target, EOS,
then PAD = 0); the dataset's info names the BOS and EOS ids. The decoder reads
BOS and the targets shifted right (teacher forcing); PAD positions weigh
nothing. Metrics: loss (nats per token), token_accuracy (teacher-forced
argmax), and in evaluation exact_match, the fraction of examples whose greedy
decoding equals the target exactly (through EOS), the figure a translation of
dates is judged by (for WMT, a strict floor under BLEU).
"""

from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from deeplearn.models.seq2seq import greedy_decode
from deeplearn.tasks.common import Task


class Seq2Seq(Task):
  best_metric: ClassVar = ("exact_match", "max")

  @property
  def bos_id(self):
    return self.info.bos_id

  @property
  def eos_id(self):
    return self.info.eos_id

  def init_variables(self, rng, batch_size: int = 1):
    source = jnp.zeros((batch_size, *self.info.input_shape), jnp.int32)
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng}, source,
                           jnp.zeros((batch_size, 1), jnp.int32), train=False)

  def _decoder_inputs(self, targets):
    bos = jnp.full((targets.shape[0], 1), self.bos_id, targets.dtype)
    return jnp.concatenate([bos, targets[:, :-1]], 1)

  def _sums(self, params, model_state, batch, rng, train, weights):
    targets = batch["targets"]
    logits = self.model.apply({"params": params, **model_state}, batch["inputs"],
                              self._decoder_inputs(targets), train=train,
                              rngs={"dropout": rng} if rng is not None else {})
    smoothing = self.label_smoothing if train else 0.0
    labels = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), smoothing)
    losses = optax.softmax_cross_entropy(logits, labels)  # [batch, target]
    w = (targets != self.model.pad_id) * weights[:, None]
    correct = jnp.argmax(logits, -1) == targets
    return {"loss": jnp.sum(losses * w), "token_accuracy": jnp.sum(correct * w),
            "count": jnp.sum(w), "examples": jnp.sum(weights)}

  def loss(self, params, model_state, batch, rng):
    weights = jnp.ones(batch["targets"].shape[0], jnp.float32)
    sums = self._sums(params, model_state, batch, rng, True, weights)
    return sums["loss"] / sums["count"], (sums, model_state)

  def eval_sums(self, params, model_state, batch):
    sums = self._sums(params, model_state, batch, None, False, batch["mask"])
    targets = batch["targets"]
    tokens, _, _ = greedy_decode(self.model, {"params": params, **model_state},
                                 batch["inputs"], max_len=targets.shape[1],
                                 bos_id=self.bos_id, eos_id=self.eos_id)
    exact = jnp.all(tokens == targets, axis=1)
    return {**sums, "exact_match": jnp.sum(exact * batch["mask"])}

  def finalize(self, sums):
    tokens = jnp.maximum(sums["count"], 1)
    metrics = {"loss": sums["loss"] / tokens,
               "token_accuracy": sums["token_accuracy"] / tokens}
    if "exact_match" in sums:
      metrics["exact_match"] = sums["exact_match"] / jnp.maximum(sums["examples"], 1)
    return metrics
