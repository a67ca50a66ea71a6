"""A character-level LSTM language model on tiny shakespeare (char-rnn).

Embedding 64 -> two LSTM layers of 256 -> logits over the 65 chars; Adam
with gradient clipping (norm 1) and cosine decay. Sequences of 128 chars are
trained with truncated BPTT in chunks of 64 (deeplearn/models/rnn.py): the
state flows through all 128, gradients through at most 64 steps. 2,048
tokens a step, as experiments/shakespeare_transformer.py. Metrics are per
character (loss in nats, bits per char).

  python -m deeplearn.train --config experiments/shakespeare_char_lstm.py --workdir runs/lstm
  python -m deeplearn.sample --workdir runs/lstm --temperature 0.8 --length 500

Measured on the 2-core development machine (2026-11-22, another training run
sharing the cores): 874,881 parameters; validation loss 1.573 nats (2.270
bits/char, 52.9% next-char accuracy) after 1,000 steps (1.832 at 250, 1.657 at
500), beside the Transformer's 1.916 nats in 1,000 steps of the same tokens;
461 s wall (about 2.9 steps/s).
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "20 steps of a small LSTM at batch 16"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "rnn_lm", "vocab_size": 65, "embed_dim": 64, "hidden_size": 256,
      "num_layers": 2, "cell": "lstm", "dropout_rate": 0.0, "bptt_len": 64, "unroll": 1})

  config.data.dataset = "tiny_shakespeare"
  config.data.seq_len = 128
  config.data.batch_size = 16
  config.data.eval_split = "validation"
  config.data.eval_batch_size = 256

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.name = "cosine"
  config.schedule.warmup_steps = 50
  config.schedule.end_factor = 0.1

  config.train.num_steps = 1000
  config.train.log_every = 50
  config.train.eval_every = 250
  config.train.checkpoint_every = 250

  if "tiny" in chosen:
    config.model.update(embed_dim=16, hidden_size=32, bptt_len=16)
    config.data.seq_len = 32
    config.data.eval_batch_size = 2048  # the validation split in one batch
    config.train.num_steps = 20
    config.schedule.warmup_steps = 5
    config.train.update(log_every=5, eval_every=20, checkpoint_every=20)
  return config
