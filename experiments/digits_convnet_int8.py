"""The digits convnet trained quantisation-aware: int8 weights and activations.

experiments/digits_convnet.py (13,706 parameters, 8x8 sklearn digits) with
`config.quantization.mode = "qat"`: every convolution and dense product runs
through qwix's fake quantisation (int8 values per output channel, computed in
float, straight-through gradients; Jacob et al., CVPR 2018), so the weights
it learns are ones that survive rounding to 8 bits. The stored weights stay
float32; evaluation runs the same fake-quantised forward pass.
docs/quantization.md has the concepts and benchmarks/quantization.py the
measured table. `:tiny` is a seconds-long smoke setting.

  python -m deeplearn.train --config experiments/digits_convnet_int8.py --workdir runs/digits_int8

Post-training quantisation of that run (or of any finished run, e.g. the
float experiments/digits_convnet.py): real int8 arrays and scales, evaluated
and written to runs/digits_int8/quantized/int8/ with its size on disk beside
the float weights', then evaluated again from disk:

  python -m deeplearn.evaluate --workdir runs/digits_int8 --quantize int8
  python -m deeplearn.evaluate --workdir runs/digits_int8/quantized/int8

(`--quantize int4`: int4 weights; `--quantize config`: this file's rules.)
"""

import os

from deeplearn.config import from_file
from deeplearn.experiments import variants

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "digits_convnet.py")

VARIANTS = {"tiny": "30 steps at batch 64"}


def get_config(arg=None):
  variants(arg, VARIANTS)
  config = from_file(RECIPE + (f":{arg}" if arg else ""))
  config.quantization.mode = "qat"
  # (module-path regex, weight dtype, activation dtype): all layers, 8 bits.
  config.quantization.rules = ((".*", "int8", "int8"),)
  return config
