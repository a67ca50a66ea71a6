"""A wide MLP on MNIST: 784 -> 1024 -> 1024 -> 10, relu (1,863,690 parameters).

The compute-bound counterpart of the lecture convnet (mnist_convnet.py): nearly all
of its 11.2 MFLOP per training example are three matmuls per layer with 256-1024
wide operands, so its train step runs near the hardware's matmul rate;
benchmarks/utilisation.py reports that rate over the measured peak. Recipe: SGD with
Nesterov momentum 0.9, lr 0.05, batch 256, 10 epochs, inputs standardized. MNIST
comes from the TFDS catalog (downloaded on first use; tests and benchmarks use tfds
mock data, so no accuracy was measured on this machine).

  python -m deeplearn.train --config experiments/mnist_mlp.py --workdir runs/mnist_mlp
"""

import ml_collections

from deeplearn.config import default_config


def get_config(arg=None):
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "mlp", "num_classes": 10, "hidden_sizes": (1024, 1024)})

  config.data.dataset = "mnist"
  config.data.batch_size = 256
  config.data.eval_batch_size = 1000
  config.data.pp_train = "standardize"
  config.data.pp_eval = "standardize"

  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True

  config.train.num_epochs = 10.0
  config.train.log_every = 100
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000
  if arg:
    raise ValueError(f"Unknown variant {arg!r}: this experiment has none.")
  return config
