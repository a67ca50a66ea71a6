"""nanoGPT's CPU shakespeare_char run, side by side: the same 4-layer,
4-head, 128-wide character GPT, context 64, AdamW (lr 1e-3 -> 1e-4 cosine,
100 warmup steps, beta2 0.99, weight decay 0.1, clip 1), no dropout.

The default is nanoGPT's README recipe (batch 12, 2,000 steps); `:fast` takes
fewer, larger steps at a higher learning rate (batch 64, lr 3e-3, 500 steps):
validation 1.868 nats, measured with other jobs on the cores (batch 32 / 600
steps: 1.984; batch 48 / 600: 1.913; batch 32 / 1,000: 1.808). Both beside
nanoGPT on one machine: benchmarks/nanogpt_side_by_side.py and RESULTS.md.

  python -m deeplearn.train --config experiments/shakespeare_char_transformer.py --workdir runs/gpt
  python -m deeplearn.sample --workdir runs/gpt --temperature 0.8 --length 500
"""

import ml_collections

from deeplearn.config import default_config


def get_config(arg=None):
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

  if arg == "fast":  # 2.0M training tokens in 500 steps (nanoGPT: 1.5M in 2,000)
    config.data.batch_size = 64
    config.optimizer.learning_rate = 3e-3
    config.train.num_steps = 500
    config.schedule.warmup_steps = 50
    config.train.update(log_every=50, eval_every=500, checkpoint_every=500)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r}: use ':fast' or none.")
  return config
