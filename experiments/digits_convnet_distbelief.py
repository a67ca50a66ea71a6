"""The digits convnet with DistBelief's data x model parallelism (model=2).

The digits convnet (digits_convnet.py) with DistBelief's data x model
parallelism: mesh `data x model=2`, every conv and dense kernel split over
`model` by the rules table alone (Dean et al., "Large scale distributed deep
networks", NIPS 2012; the splits are Megatron's, Shoeybi et al. 2019).

MODEL_PARALLEL_RULES map the wide axes to `model`: the first conv's output
channels (`conv_out`, a column split), the second conv's input channels (a
row split, one all-reduce), the hidden units (`mlp`: column, then row). The
batch splits over `data`. Needs an even number of devices.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m deeplearn.train \\
    --config experiments/digits_convnet_distbelief.py --workdir runs/distbelief

Measured 2026-11-22, 8 simulated devices (data=4 x model=2) on the shared
2-core machine: 98.33% test accuracy (loss 0.0619) after 1,000 steps, 25.7 s;
the recipe on 1 device: 98.33% (loss 0.0619), 10.5 s.
"""

import os

import ml_collections

from deeplearn.config import MODEL_PARALLEL_RULES, from_file
from deeplearn.experiments import variants

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "digits_convnet.py")

VARIANTS = {"tiny": "30 steps at batch 64 (2 or more devices, an even number)"}


def get_config(arg=None):
  variants(arg, VARIANTS)
  config = from_file(RECIPE + (f":{arg}" if arg else ""))
  config.mesh = ml_collections.ConfigDict({"data": -1, "model": 2})
  config.sharding.rules = MODEL_PARALLEL_RULES
  return config
