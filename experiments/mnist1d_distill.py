"""MNIST-1D MLP student distilled from the CNN teacher (Hinton et al. 2015).

Knowledge distillation (deeplearn/tasks/distillation.py, docs/distillation.md):
the MNIST-1D reference MLP (mnist1d_mlp.py: 15,210 parameters, about 68% test
accuracy trained alone) learns from the 5,210-parameter CNN of mnist1d_cnn.py
(about 94%) through alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) *
CE(labels), the CNN's forward pass inside the student's jitted step. The same
recipe otherwise: Adam 1e-2, batch 100, 6,000 steps. Train the teacher first:

  python -m deeplearn.train --config experiments/mnist1d_cnn.py --workdir runs/mnist1d_cnn
  python -m deeplearn.train --config experiments/mnist1d_distill.py --workdir runs/distill

`:logits` and `:tiny` take the teacher from experiments/teachers/mnist1d_cnn.npz
instead: the train split's logits of that CNN run (seed 0, 6,000 steps), as
`deeplearn.schemes.supervised.export_logits` wrote them; checked against the
split's labels and looked up by each example's inputs, so :tiny needs no
teacher run. `:omit3` is the paper's transfer-set experiment: no 3s in the
transfer set (train[:3600]; train[3600:] is left for choosing the bias
correction, benchmarks/distill.py).
"""

import os

from deeplearn.config import from_file
from deeplearn.experiments import variants

HERE = os.path.dirname(os.path.abspath(__file__))
TEACHER_LOGITS = os.path.join(HERE, "teachers", "mnist1d_cnn.npz")

VARIANTS = {"tiny": "20 steps at batch 32, the stored teacher logits",
            "logits": "the stored teacher logits instead of runs/mnist1d_cnn",
            "omit3": "no 3s in the transfer set (train[:3600])"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = from_file(os.path.join(HERE, "mnist1d_mlp.py")
                     + (":tiny" if "tiny" in chosen else ""))
  config.distill.teacher_workdir = "runs/mnist1d_cnn"
  config.distill.temperature = 4.0
  config.distill.alpha = 0.5
  if chosen & {"tiny", "logits"}:
    config.distill.teacher_workdir = ""
    config.distill.teacher_logits = TEACHER_LOGITS
  if "omit3" in chosen:
    config.distill.omit_class = 3
    config.data.train_split = "train[:3600]"
  return config
