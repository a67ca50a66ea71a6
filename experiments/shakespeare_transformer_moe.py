"""The char-level GPT with a mixture of experts in every other block.

The char-level GPT of shakespeare_transformer.py with a sparsely-gated
mixture of experts (Switch-style top-1) in place of every other block's MLP.

Blocks 2 and 4 of 4 get 4 experts, each the dense model's MLP (128 -> 512 ->
128): a token runs through one of them, so the FLOPs per token are the dense
model's plus the router's (128 x 4 per token and MoE layer) and the one-hot
dispatch / combine einsums; the parameters grow from 809,856 to 1,601,152.
Capacity factor 1.25 per sequence; tokens over capacity skip the layer
through the residual; the load-balancing loss weighs 0.01 (Switch).
Variants: `:top2` (GShard's top-2, twice the expert FLOPs), `:soft` (the
dense softmax mixture, 4 experts on every token: 4x), `:tiny` (tests).

Expert parallelism is the rules table EXPERT_PARALLEL_RULES: on 8 devices
`--config.mesh.expert=4` puts one expert per device of each group of 4 and
the tokens over data x expert: per MoE layer an all-to-all into the experts
and one back, in each pass.

Measured (2026-11-22, 1 device of the shared 2-core machine, 1,000 steps,
each run beside the dense recipe): validation 1.877 / 1.888 nats (seeds 0 /
1) against the dense model's 1.916 / 1.904, 942 / 618 s against 851 / 606 s;
1.5 / 2.7% of tokens dropped at the end. `:top2` 1.850, `:soft` 1.851 (seed
0; 2x and 4x the expert FLOPs). Details: benchmarks/RESULTS.md.

  python -m deeplearn.train --config experiments/shakespeare_transformer_moe.py --workdir runs/moe
"""

import os

import ml_collections

from deeplearn.config import EXPERT_PARALLEL_RULES, from_file
from deeplearn.experiments import variants

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "shakespeare_transformer.py")

VARIANTS = {
    "tiny": "20 steps of a 2-layer GPT at batch 16",
    "top2": "two experts a token (GShard)",
    "soft": "the dense mixture: every expert on every token",
}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = from_file(RECIPE + (":tiny" if "tiny" in chosen else ""))
  config.model = ml_collections.ConfigDict({
      **config.model.to_dict(), "moe_experts": 4, "moe_every": 2,
      "moe_top_k": 1, "moe_capacity_factor": 1.25, "moe_mode": "sparse",
      "moe_noisy_gating": False, "moe_aux_weight": 0.01})
  config.mesh = ml_collections.ConfigDict({"data": -1, "expert": 1})
  config.sharding.rules = EXPERT_PARALLEL_RULES
  if "top2" in chosen:  # GShard: 2 experts a token, twice the expert FLOPs
    config.model.update(moe_top_k=2, moe_capacity_factor=1.25)
  elif "soft" in chosen:  # the dense mixture: every expert on every token
    config.model.moe_mode = "soft"
  return config
