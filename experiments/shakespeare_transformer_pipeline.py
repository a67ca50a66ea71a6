"""The char-level GPT, pipelined over 4 stages (1F1B or GPipe).

The char-level GPT of shakespeare_transformer.py, pipelined: its layers
cut into 4 stages along the `stage` mesh axis, micro-batches flowing through
on the 1F1B schedule (deeplearn/parallel/pipeline.py), the batch also split
over `data`.

Mesh `data=2 x stage=4` (8 devices; simulated on a CPU with
XLA_FLAGS=--xla_force_host_platform_device_count=8). The rule
`("layers", "stage")` keeps each stage's block parameters on its own devices
(scan_layers gives them a leading `layers` axis); embedding and output layer
are replicated and run on the first / last stage. `:gpipe` swaps the schedule
(same losses; every stage keeps all m micro-batches' activations).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m deeplearn.train \\
    --config experiments/shakespeare_transformer_pipeline.py:tiny --workdir runs/pp
"""

import os

import ml_collections

from deeplearn.config import DATA_PARALLEL_RULES, from_file
from deeplearn.experiments import variants

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "shakespeare_transformer.py")

VARIANTS = {
    "tiny": "a 4-block GPT, a few steps (8 devices: data=2 x stage=4)",
    "gpipe": "the GPipe schedule in place of 1F1B",
}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = from_file(RECIPE + (":tiny" if "tiny" in chosen else ""))
  config.mesh = ml_collections.ConfigDict({"data": 2, "stage": 4})
  config.sharding.rules = DATA_PARALLEL_RULES + (("layers", "stage"),)
  config.model.scan_layers = True
  config.train.step_form = "pipeline"
  config.train.pipeline_schedule = "gpipe" if "gpipe" in chosen else "1f1b"
  # 8 micro-batches on 4 stages: bubble (p - 1) / (m + p - 1) = 3 / 11.
  config.train.microbatches = 8
  if "tiny" in chosen:
    config.model.num_layers = 4  # one block per stage
  return config
