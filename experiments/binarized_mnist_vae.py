"""The flax example's VAE on binarised MNIST: 20 latents, MLP 500, Adam 1e-3, 30 epochs.

TFDS `binarized_mnist` (Larochelle & Murray's fixed binarisation, 50,000 train /
10,000 test); the architecture, optimizer and budget of google/flax's
examples/vae: MLP 784-500-(20 x 2)-500-784, Bernoulli decoder (815,824
parameters), Adam 1e-3, batch 128, 30 epochs. The flax example reports a test ELBO
of -107.05 +/- 0.25 nats; ours reports the ELBO and the importance-sampled log p(x)
(k = 5,000, Burda et al.'s setting, in chunks of 250). The data is binary already:
no binarisation. `:tiny` runs on TFDS mock data (grey levels, scaled to [0, 1] and
binarised dynamically) where the set is not prepared.

  python -m deeplearn.train --config experiments/binarized_mnist_vae.py --workdir runs/bmnist_vae
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "6 steps at batch 16 on mock data where not prepared, k = 10"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.task = "vae"
  config.model = ml_collections.ConfigDict({
      "name": "vae", "latent_size": 20, "hidden_sizes": (500,),
      "likelihood": "bernoulli"})

  config.data.dataset = "binarized_mnist"
  config.data.eval_split = "test"
  config.data.batch_size = 128
  config.data.eval_batch_size = 500
  config.data.pp_train = "to_float"
  config.data.pp_eval = "to_float"

  # binary already (a fixed binarisation): no binarize.
  config.loss.update(binarize="none", beta=1.0, iw_samples=5000, iw_chunk=250,
                     num_levels=256)

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3

  config.train.num_epochs = 30
  config.train.log_every = 100
  config.train.eval_every = 2000
  config.train.checkpoint_every = 2000

  if "tiny" in chosen:
    config.data.mock_examples = 64
    config.data.pp_train = config.data.pp_eval = "scale(1/255)"  # mock images are 0..255
    config.loss.binarize = "dynamic"
    config.data.batch_size = 16
    config.data.eval_batch_size = 32
    config.loss.iw_samples = 10
    config.loss.iw_chunk = 10
    config.train.num_epochs = 0.0
    config.train.num_steps = 6
    config.train.log_every = 3
    config.train.eval_every = 6
    config.train.checkpoint_every = 6
  return config
