"""Two towers rank ISO dates for human-written ones: pair ranking with in-batch negatives.

The lectures' lemma-selection example (DeepMath premise selection, Alemi et al.
2016) on the offline `dates` data set: a bidirectional-LSTM tower reads "Sunday,
May 3rd 1998", another reads "1998-05-03"; the cosine of their vectors (over a
temperature) scores the pair. Training is softmax cross-entropy over the 128
targets of the batch (deeplearn/tasks/pair_ranking.py); evaluation ranks each
test date's ISO form among the 400 of its batch (recall@1, MRR; chance 1/400)
and against 3 hard negatives that differ in one field (hard_recall_at_1, chance
1/4). `config.model.score = "mlp"` scores [u, v, |u-v|, u*v] with an MLP instead.

  python -m deeplearn.train --config experiments/dates_two_tower.py --workdir runs/two_tower

Measured on the 2-core development machine (2026-11-22, load average 9-13 from
other runs): 119,872 parameters; held-out recall@1 among 400 candidates 98.8% /
99.6% / 99.75% at steps 200 / 400 / 600, MRR 0.9987 and hard_recall_at_1 99.75%
at 600 (test loss 0.071); 383 s wall for the 600 steps.
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "60 steps of small towers at batch 32"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.task = "pair_ranking"
  config.model = ml_collections.ConfigDict({
      "name": "two_tower", "vocab_size": 63, "embed_dim": 32, "hidden_size": 64,
      "num_layers": 1, "cell": "lstm", "bidirectional": True, "out_dim": 64,
      "score": "cosine", "temperature": 0.05, "mlp_dim": 128, "pad_id": 0,
      "dropout_rate": 0.0})

  config.data.dataset = "dates"
  config.data.batch_size = 128
  config.data.eval_split = "test"
  config.data.eval_batch_size = 400  # 5 batches; a multiple of 8 devices

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 3e-3
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.name = "cosine"
  config.schedule.warmup_steps = 50
  config.schedule.end_factor = 0.05

  config.train.num_steps = 600
  config.train.log_every = 100
  config.train.eval_every = 200
  config.train.checkpoint_every = 200

  if "tiny" in chosen:
    config.model.update(embed_dim=16, hidden_size=32, out_dim=32, bidirectional=False)
    config.data.batch_size = 32
    config.train.num_steps = 60
    config.schedule.warmup_steps = 5
    config.train.update(log_every=20, eval_every=60, checkpoint_every=60)
  return config
