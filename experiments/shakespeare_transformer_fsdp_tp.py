"""The char-level GPT trained with FSDP and Megatron tensor parallelism at once.

The char-level GPT of shakespeare_transformer.py, trained with FSDP
and Megatron tensor parallelism at once: the parallelism is this table.

Mesh `data x fsdp=2 x model=2`. The batch splits over data and fsdp; every
parameter's `embed` axis splits over fsdp (ZeRO-3: each device stores a shard
and jit all-gathers a layer's weights when it runs); attention heads, MLP
units and the vocabulary split over model (Megatron column / row splits, a
vocabulary-parallel embedding and softmax). No parameter carries two names
that map to one mesh axis (tests/test_transformer.py checks every one).

Variants: `:tiny` (tests, seconds); `:small`, the default: the recipe's
4-layer model, 1,000 steps (2026-11-22, 8 simulated devices on the shared
2-core machine: validation 1.916 nats = 2.765 bits/char in 490 s); `:gpt2`
and `:gpt2_medium`: GPT-2 small / medium shapes in bfloat16 with remat and
scanned layers, compile-only on a CPU (about 13 s each); run them on a slice.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m deeplearn.train \\
    --config experiments/shakespeare_transformer_fsdp_tp.py:small --workdir runs/fsdp_tp
"""

import os

import ml_collections

from deeplearn.config import from_file
from deeplearn.experiments import variants

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "shakespeare_transformer.py")

FSDP_TP_RULES = (
    ("batch", ("data", "fsdp")),  # first: activations keep fsdp for the batch
    ("embed", "fsdp"),
    ("heads", "model"), ("mlp", "model"), ("vocab", "model"),
    ("kv", None), ("length", None), ("layers", None))

GPT2 = {"gpt2": (12, 12, 768), "gpt2_medium": (24, 16, 1024)}

VARIANTS = {
    "tiny": "20 steps of a 2-layer GPT (4 devices: fsdp=2 x model=2)",
    "small": "the recipe's model (the default)",
    "gpt2": "GPT-2 small's shape, context 1024 (for inspect --topology)",
    "gpt2_medium": "GPT-2 medium's shape, context 1024",
}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = from_file(RECIPE + (":tiny" if "tiny" in chosen else ""))
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 2, "model": 2})
  config.sharding.rules = FSDP_TP_RULES
  # 65 characters -> 128 rows, so that vocab -> model splits evenly.
  config.model.vocab_pad_multiple = 64
  # One block compiled instead of num_layers (SPMD partitioning of each is
  # the slow part of compiling); block parameters get a `layers` axis.
  config.model.scan_layers = True

  gpt2 = chosen & set(GPT2)
  if gpt2:  # none = small: the recipe's model
    layers, heads, embed = GPT2[gpt2.pop()]
    config.model.update(num_layers=layers, num_heads=heads, embed_dim=embed,
                        mlp_dim=4 * embed, max_len=1024, dtype="bfloat16",
                        remat="dots", dropout_rate=0.1)
    config.data.seq_len = 1024
    config.data.batch_size = 32
    config.data.eval_batch_size = 32
    config.optimizer.learning_rate = 6e-4
    config.optimizer.b2 = 0.95
    config.train.num_steps = 5000
    config.schedule.warmup_steps = 200
  return config
