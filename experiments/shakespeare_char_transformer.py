"""nanoGPT's CPU shakespeare_char run, side by side.

nanoGPT's CPU shakespeare_char run, side by side: the same 4-layer,
4-head, 128-wide character GPT, context 64, AdamW (lr 1e-3 -> 1e-4 cosine,
100 warmup steps, beta2 0.99, weight decay 0.1, clip 1), no dropout.

The default is nanoGPT's README recipe (batch 12, 2,000 steps); `:fast` doubles
the learning rate and stops at 1,600 steps. Measured 2026-11-22 on the 2-core
machine, one run after the other, both scored on the same windows of the last
10% of the text: nanoGPT (PyTorch 2.13) 1.898 nats in 72.6-83.7 s; default
1.909 in 81.4 s; `:fast` 1.853 in 67.9-70.9 s. Table and command:
benchmarks/RESULTS.md, benchmarks/nanogpt_side_by_side.py.

  python -m deeplearn.train --config experiments/shakespeare_char_transformer.py --workdir runs/gpt
  python -m deeplearn.sample --workdir runs/gpt --temperature 0.8 --length 500
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {
    "fast": "twice the learning rate, 1,600 steps",
    "tiny": "20 steps of a 2-layer, 32-wide GPT at batch 16",
}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "transformer", "vocab_size": 65, "max_len": 64, "num_layers": 4,
      "num_heads": 4, "embed_dim": 128, "mlp_dim": 512, "dropout_rate": 0.0,
      "tie_embeddings": True})

  config.data.dataset = "tiny_shakespeare"
  config.data.seq_len = 64
  config.data.batch_size = 12
  # nanoGPT validates on the last 10% of the text: our validation and test
  # splits (5% each); the benchmark reports their mean.
  config.data.eval_split = "validation"
  config.data.eval_batch_size = 512

  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.b2 = 0.99
  config.optimizer.weight_decay = 0.1
  config.optimizer.decay_mask = "kernels"  # nanoGPT: 2-D weights only
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.name = "cosine"
  config.schedule.warmup_steps = 100
  config.schedule.end_factor = 0.1

  config.train.num_steps = 2000
  config.train.log_every = 100
  config.train.eval_every = 2000
  config.train.checkpoint_every = 2000

  if "fast" in chosen:  # twice the learning rate, 80% of nanoGPT's steps and tokens
    config.optimizer.learning_rate = 2e-3
    config.train.num_steps = 1600
    config.train.update(eval_every=1600, checkpoint_every=1600)
  if "tiny" in chosen:
    config.model.update(max_len=32, num_layers=2, num_heads=2, embed_dim=32, mlp_dim=128)
    config.data.update(seq_len=32, batch_size=16)
    config.schedule.warmup_steps = 5
    config.train.update(num_steps=20, log_every=5, eval_every=20, checkpoint_every=20)
  return config
