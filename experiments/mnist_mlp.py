"""A wide MLP on MNIST: 784 -> 1024 -> 1024 -> 10, relu (1,863,690 parameters).

The compute-bound counterpart of the lecture convnet (mnist_convnet.py): 99% of its
9.7 MFLOP per training example (XLA's count) are matmuls with 256-1024 wide operands.
Its train step reached 62% of the measured float32 matmul peak on the 2-core machine
(benchmarks/utilisation.py, RESULTS.md). Recipe: SGD with Nesterov momentum 0.9, lr
0.05, batch 256; the data, 10 epochs and standardized inputs are mnist_convnet.py's,
which this file loads. MNIST comes from the TFDS catalog (downloaded on first use;
tests and benchmarks use tfds mock data, so no accuracy was measured on this machine).

  python -m deeplearn.train --config experiments/mnist_mlp.py --workdir runs/mnist_mlp
"""

import os

import ml_collections

from deeplearn.config import from_file
from deeplearn.experiments import variants

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_convnet.py")

VARIANTS = {"tiny": "4 steps at batch 16; mock data where MNIST is not prepared"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = from_file(RECIPE + (":tiny" if "tiny" in chosen else ""))
  config.model = ml_collections.ConfigDict({
      "name": "mlp", "num_classes": 10, "hidden_sizes": (1024, 1024)})
  config.optimizer.update(learning_rate=0.05, momentum=0.9, nesterov=True)
  if "tiny" not in chosen:
    config.data.batch_size = 256
    config.train.update(eval_every=1000, checkpoint_every=1000)
  return config
