"""A small MLP on sklearn's 8x8 digits distilled from the digits convnet.

Knowledge distillation (Hinton et al. 2015; deeplearn/tasks/distillation.py,
docs/distillation.md) on real data, offline: a 64-32-10 MLP (2,410 parameters)
learns from digits_convnet.py's convnet (13,706 parameters) through
alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels), the
convnet's forward pass inside the student's jitted step; inputs standardized,
Adam 1e-3, batch 64, 1,000 steps as the teacher. Train the teacher first:

  python -m deeplearn.train --config experiments/digits_convnet.py --workdir runs/digits
  python -m deeplearn.train --config experiments/digits_distill.py --workdir runs/digits_distill

`:logits` and `:tiny` take the teacher from experiments/teachers/digits_convnet.npz
instead: the train split's logits of that convnet run (seed 0, 1,000 steps),
checked against the split's labels and looked up by each example's inputs.
`:scratch` is the same student without a teacher, for comparison.
"""

import os

import ml_collections

from deeplearn.config import from_file
from deeplearn.experiments import variants

HERE = os.path.dirname(os.path.abspath(__file__))
TEACHER_LOGITS = os.path.join(HERE, "teachers", "digits_convnet.npz")

VARIANTS = {"tiny": "30 steps, the stored teacher logits",
            "logits": "the stored teacher logits instead of runs/digits",
            "scratch": "the student alone, no teacher"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = from_file(os.path.join(HERE, "digits_convnet.py")
                     + (":tiny" if "tiny" in chosen else ""))
  config.model = ml_collections.ConfigDict({
      "name": "mlp", "num_classes": 10, "hidden_sizes": (32,)})
  config.distill.teacher_workdir = "runs/digits"
  config.distill.temperature = 4.0
  config.distill.alpha = 0.5
  if chosen & {"tiny", "logits"}:
    config.distill.teacher_workdir = ""
    config.distill.teacher_logits = TEACHER_LOGITS
  if "scratch" in chosen:
    config.distill.teacher_workdir = ""
    config.distill.teacher_logits = ""
  return config
