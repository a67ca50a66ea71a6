"""LeNet-5 on MNIST with the EE-559 lecture recipe (mnist_convnet.py).

LeCun et al. 1998's layer sizes (deeplearn.models.lenet: conv 5x5x6, pool,
conv 5x5x16, pool, dense 120, 84, 10; 61,706 parameters) with the MNIST digits
padded by 2 to the paper's 32x32 input. The training recipe is the lecture
convnet's, which this file only changes the model of: plain SGD at lr 0.1,
batch 100, 10 epochs, inputs standardized by the training mean and std. (The
1998 paper trained 20 epochs with a stochastic diagonal Levenberg-Marquardt
method, 0.95% test error.) MNIST comes from the TFDS catalog (downloaded on
first use); `:tiny` (a few steps at batch 16) is what the tests run on TFDS
mock data.

  python -m deeplearn.train --config experiments/mnist_lenet5.py --workdir runs/lenet5
"""

import os

import ml_collections

from deeplearn.config import from_file
from deeplearn.experiments import variants

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_convnet.py")

VARIANTS = {"tiny": "4 steps at batch 16; mock data where MNIST is not prepared"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = from_file(RECIPE + (":tiny" if "tiny" in chosen else ""))  # tiny: the recipe's
  config.model = ml_collections.ConfigDict({
      "name": "lenet5", "num_classes": 10, "padding": 2})
  return config
