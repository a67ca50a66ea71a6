"""A detection cascade: digits placed on 32x32 noise canvases, read through 169 sliding windows each.

The lecture's rare-object case: 0-2 sklearn digits a canvas, so about 99% of
the windows are background (class 10). Logistic regression -> MLP -> convnet
train jointly on sampled windows (every digit, off-centre hard negatives and
random background); at evaluation the early stages may only reject a window
as background, with thresholds calibrated on the validation canvases so that
digit recall stays within half a point of the convnet's, and the report gives
windows rejected per stage, compute saved against the convnet on every window
and the canvases read entirely right (docs/cascades.md). `:tiny` is a smoke
setting.

  python -m deeplearn.train --config experiments/digits_canvas_cascade.py --workdir runs/canvas
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.data.builders import canvas
from deeplearn.experiments import variants

VARIANTS = {"tiny": "40 steps at batch 64, 10 canvases to calibrate and 10 to test"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.scheme = "cascade"
  config.task = "cascade"
  config.model = ml_collections.ConfigDict({
      "name": "cascade", "num_classes": canvas.BACKGROUND + 1,
      "stages": ("linear", "mlp", "convnet"), "mlp_hidden_sizes": (64,),
      "conv_features": (16, 32), "conv_hidden_sizes": (64,)})

  config.data.dataset = "digits_canvas"
  config.data.batch_size = 64
  config.data.eval_batch_size = 1690  # 10 canvases
  config.cascade = ml_collections.ConfigDict({
      "calibration_split": "validation", "tolerance": 0.005,
      "thresholds": (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999),
      "reject_class": canvas.BACKGROUND, "group_size": canvas.WINDOWS_PER_CANVAS,
      "bucket_size": 32})

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3

  config.train.num_steps = 2000
  config.train.log_every = 100
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000

  if "tiny" in chosen:
    config.train.num_steps = 40
    config.train.log_every = 20
    config.train.eval_every = 40
    config.data.eval_split = "test[:1690]"
    config.cascade.calibration_split = "validation[:1690]"
  return config
