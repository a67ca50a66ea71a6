"""Specification of the two-tower model and the pair-ranking task on dates."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplearn import config as config_lib, models, train
from deeplearn.data.builders import dates
from deeplearn.tasks import pair_ranking

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = dates.vocabulary()


def encode(texts, length):
  return jnp.asarray([[VOCAB.index(c) for c in t.ljust(length, dates.PAD)] for t in texts],
                     jnp.int32)


def pairs(n, seed=0):
  examples = dates.generate("test")[seed:seed + n]
  return (encode([s for s, _ in examples], dates.SOURCE_LEN),
          encode([t + dates.EOS for _, t in examples], dates.TARGET_LEN))


def two_tower(score, bidirectional=True):
  return models.get_model(dict(name="two_tower", vocab_size=len(VOCAB), embed_dim=8,
                               hidden_size=8, out_dim=8, mlp_dim=8, score=score,
                               bidirectional=bidirectional))


@pytest.mark.parametrize("score,bidirectional", [("dot", False), ("mlp", True)])
def test_scores_every_pair_equivariantly_with_separate_towers_ignoring_padding(
    score, bidirectional):  # "cosine": the tests below
  model = two_tower(score, bidirectional)
  queries, candidates = pairs(5)
  candidates = candidates[:4]  # C != B
  variables = jax.jit(lambda r: model.init(r, queries, candidates, train=False))(
      jax.random.key(0))
  names = {n for s in jax.tree.leaves(nn.get_partition_spec(variables)) for n in s if n}
  assert names <= {"embed", "mlp", "vocab"}
  params = variables["params"]  # two towers, nothing shared
  assert {"query", "candidate"} <= set(params)
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(nn.unbox(t))])  # noqa: E731
  assert not np.allclose(flat(params["query"]), flat(params["candidate"]))
  run = jax.jit(lambda q, c: model.apply(variables, q, c, train=False))
  scores = run(queries, candidates)
  assert scores.shape == (5, 4) and scores.dtype == jnp.float32
  perm_c, perm_q = np.array([3, 0, 1, 2]), np.array([3, 0, 4, 1, 2])
  np.testing.assert_allclose(run(queries, candidates[perm_c]), scores[:, perm_c], atol=1e-5)
  np.testing.assert_allclose(run(queries[perm_q], candidates), scores[perm_q], atol=1e-5)
  pick = np.array([[0, 1], [3, 2], [2, 0], [1, 1], [0, 3]])  # 2 candidates per query
  per_query = run(queries, candidates[pick])  # [5, 2]
  np.testing.assert_allclose(per_query, np.take_along_axis(scores, pick, 1), atol=1e-5)
  padded = jnp.pad(candidates, ((0, 0), (0, 6)))  # more PAD after the text
  np.testing.assert_allclose(run(queries, padded), scores, atol=1e-5)


def test_hard_negatives_differ_from_the_target_in_exactly_one_field():
  _, targets = pairs(6)
  hard = np.asarray(pair_ranking.hard_negatives(targets))  # [6, 4, L]
  assert hard.shape == (6, 4, dates.TARGET_LEN)
  np.testing.assert_array_equal(hard[:, 0], targets)
  text = lambda ids: "".join(VOCAB[i] for i in ids).rstrip(dates.PAD + dates.EOS)  # noqa: E731
  for i in range(6):
    true = text(hard[i, 0]).split("-")
    for k in range(3):
      fields = text(hard[i, 1 + k]).split("-")
      changed = [f for f in range(3) if fields[f] != true[f]]
      assert changed in ([k], []), (true, fields)  # [] only when both dates share it
      assert fields[k] == text(targets[i - 1]).split("-")[k]


def test_duplicate_targets_are_not_counted_as_negatives():
  model = two_tower("cosine")
  queries, candidates = pairs(4)
  candidates = candidates.at[1].set(candidates[0])  # one date, two styles
  task = pair_ranking.PairRanking(model, type("Info", (), {"input_shape": (dates.SOURCE_LEN,)}))
  params = jax.jit(lambda r: nn.unbox(task.init_variables(r)))(jax.random.key(0))["params"]
  batch = {"inputs": queries, "targets": candidates, "mask": jnp.ones(4)}
  sums = jax.jit(task.eval_sums)(params, {}, batch)
  scores = jax.jit(lambda p: model.apply({"params": p}, queries, candidates, train=False))(
      params)
  # The reference: each query's rank among the candidates that are not its own date.
  expected = sum(1 / (1 + sum(float(scores[i, j]) > float(scores[i, i]) for j in range(4)
                              if j != i and not (i < 2 and j < 2))) for i in range(4))
  np.testing.assert_allclose(float(sums["mrr"]), expected, rtol=1e-5)


def test_tiny_experiment_lowers_the_loss_and_beats_chance(tfds_data_dir, tmp_path):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", "dates_two_tower.py:tiny"))
  config.data.data_dir = tfds_data_dir
  config.train.progress = False
  workdir = str(tmp_path / "run")
  summary = train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    losses = [r["loss"] for r in map(json.loads, f) if r.get("split") == "train"]
  assert losses[-1] < losses[0], losses
  final = summary["final"]
  assert summary["best"]["metric"] == "mrr"
  assert final["recall_at_1"] > 10 / config.data.eval_batch_size, final  # chance: 1 / 400
  assert final["hard_recall_at_1"] > 0.25, final  # chance: 1 / 4
