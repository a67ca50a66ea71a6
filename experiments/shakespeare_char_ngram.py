"""A neural 4-gram character model on tiny shakespeare (Bengio et al. 2003).

The three previous characters, embedded and concatenated, feed a tanh layer
that predicts the next one: the next-token task at its smallest. Metrics are
per character: loss (nats), perplexity and bits per character. The text
(1,115,394 chars, char-rnn's 90/5/5 split) ships inside the package.

  python -m deeplearn.train --config experiments/shakespeare_char_ngram.py --workdir runs/ngram
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "30 steps at batch 64"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "ngram_mlp", "vocab_size": 65, "context": 3, "embed_dim": 16,
      "hidden_size": 256})

  config.data.dataset = "tiny_shakespeare"
  config.data.seq_len = 128
  config.data.batch_size = 64
  config.data.eval_split = "validation"
  config.data.eval_batch_size = 64

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 3e-3
  config.schedule.name = "cosine"
  config.schedule.warmup_steps = 100

  config.train.num_steps = 3000
  config.train.log_every = 100
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000

  if "tiny" in chosen:
    config.data.seq_len = 32
    config.train.num_steps = 30
    config.schedule.warmup_steps = 5
    config.train.update(log_every=10, eval_every=30, checkpoint_every=30)
  return config
