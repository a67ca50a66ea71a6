"""Pair ranking with in-batch negatives: which candidate belongs to the query?

Batches are a `source`/`target` dataset's (deeplearn.data.pipeline, e.g.
`dates`): `inputs` int32 [B, source] (a human-written date) and `targets`
int32 [B, target] (its ISO date, EOS, PAD). The model (a two tower,
deeplearn/models/two_tower.py) scores every query against every target of
the batch, [B, B]; training is softmax cross-entropy towards the diagonal:
the other B - 1 targets are the negatives (the sampled softmax of retrieval,
Henderson et al. 2017; Gillick et al. 2019), candidates identical to the true
one (the same date in two styles) removed as accidental hits.

Metrics, per query: loss, recall_at_1 (the true target scores highest) and
mrr (mean reciprocal rank), among the batch's candidates, so they depend on
the batch size: chance is 1 / B. Evaluation adds hard_recall_at_1: the true
ISO date against three that differ from it in one field (year, month or day,
taken from the next query's date; a few such mixes are not real dates),
chance 1 / 4.
"""

from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from deeplearn.data.builders.dates import TARGET_LEN
from deeplearn.tasks.common import Task

# "YYYY-MM-DD" + EOS: where each field sits in an ISO target.
FIELDS = (slice(0, 4), slice(5, 7), slice(8, 10))


def hard_negatives(targets):
  """[B, 1 + len(FIELDS), L]: each target, then copies with one field taken
  from the next row's target."""
  donor = jnp.roll(targets, 1, axis=0)
  position = jnp.arange(targets.shape[1])
  swaps = [jnp.where((position >= f.start) & (position < f.stop), donor, targets)
           for f in FIELDS]
  return jnp.stack([targets, *swaps], 1)




class PairRanking(Task):
  best_metric: ClassVar = ("mrr", "max")

  def __post_init__(self):
    if self.label_smoothing:
      raise ValueError("config.loss.label_smoothing: pair_ranking has none; set it to 0.")

  def init_variables(self, rng, batch_size: int = 1):
    queries = jnp.zeros((batch_size, *self.info.input_shape), jnp.int32)
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng}, queries,
                           jnp.zeros((batch_size, TARGET_LEN), jnp.int32), train=False)

  def _sums(self, params, model_state, batch, rng, train, weights):
    targets = batch["targets"]
    scores = self.model.apply({"params": params, **model_state}, batch["inputs"], targets,
                              train=train, rngs={"dropout": rng} if rng is not None else {})
    b = targets.shape[0]
    eye = jnp.eye(b, dtype=bool)
    same = jnp.all(targets[:, None] == targets[None], -1)  # [B, B]
    candidate = (~same | eye) & (weights[None] > 0)  # no accidental hits, no padding
    logits = jnp.where(candidate, scores, -1e9)  # finite: no 0 * inf in the gradient
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(b))
    rank = 1.0 + jnp.sum((scores > jnp.diagonal(scores)[:, None]) & candidate & ~eye, 1)
    return {"loss": jnp.sum(losses * weights),
            "recall_at_1": jnp.sum((rank == 1) * weights),
            "mrr": jnp.sum(weights / rank),
            "count": jnp.sum(weights)}

  def loss(self, params, model_state, batch, rng):
    weights = jnp.ones(batch["targets"].shape[0], jnp.float32)
    sums = self._sums(params, model_state, batch, rng, True, weights)
    return sums["loss"] / sums["count"], (sums, model_state)

  def eval_sums(self, params, model_state, batch):
    weights = batch["mask"].astype(jnp.float32)
    sums = self._sums(params, model_state, batch, None, False, weights)
    candidates = hard_negatives(batch["targets"])  # [B, 4, L]
    scores = self.model.apply({"params": params, **model_state}, batch["inputs"],
                              candidates, train=False)  # [B, 4]
    differs = jnp.any(candidates != candidates[:, :1], -1)  # a swap can change nothing
    hard_rank = 1.0 + jnp.sum((scores > scores[:, :1]) & differs, 1)
    return {**sums, "hard_recall_at_1": jnp.sum((hard_rank == 1) * weights)}

  def finalize(self, sums):
    count = jnp.maximum(sums["count"], 1)
    return {k: v / count for k, v in sums.items() if k != "count"}
