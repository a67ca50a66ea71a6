"""The EE-559 lecture convnet on MNIST (F. Fleuret, "Deep learning", EPFL).

conv 5x5x32, max-pool 3, relu, conv 5x5x64, max-pool 2, relu, dense 200,
relu, dense 10 (105,506 parameters). The lecture's recipe: 10 epochs, batch
100, plain SGD at lr 0.1, inputs standardized by the training mean and std;
it reports about 1% test error. MNIST comes from the TFDS catalog (downloaded
on first use; tests use tfds mock data).

  python -m deeplearn.train --config experiments/mnist_convnet.py --workdir runs/mnist
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "4 steps at batch 16; mock data where MNIST is not prepared"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "convnet", "num_classes": 10, "features": (32, 64),
      "kernel_size": 5, "pools": (3, 2), "padding": "VALID",
      "hidden_sizes": (200,)})

  config.data.dataset = "mnist"
  config.data.batch_size = 100
  config.data.eval_batch_size = 1000
  config.data.pp_train = "standardize"
  config.data.pp_eval = "standardize"

  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.1

  config.train.num_epochs = 10.0
  config.train.log_every = 100
  config.train.eval_every = 1200
  config.train.checkpoint_every = 1200
  if "tiny" in chosen:
    config.data.update(batch_size=16, eval_batch_size=16, mock_examples=32)
    config.train.update(num_epochs=0.0, num_steps=4, log_every=2, eval_every=4,
                        checkpoint_every=4)
  return config
