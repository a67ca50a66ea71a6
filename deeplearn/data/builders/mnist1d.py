"""MNIST-1D as a TFDS builder (Greydanus & Kobak, "Scaling down deep learning with MNIST-1D", 2024).

Generated offline by the `mnist1d` package: `make_dataset(get_dataset_args())` reproduces the
published 4,000 train / 1,000 test split of 40-sample 1D digit signals.
"""

import numpy as np
import tensorflow_datasets as tfds

from deeplearn.data.builders.base import LocalBuilder


class Mnist1d(LocalBuilder, skip_registration=True):
  """MNIST-1D: `inputs` float32 [40], `label` of 10 classes, in the package's order."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "inputs": tfds.features.Tensor(shape=(40,), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("inputs", "label"),
        # Keep the package's order, so example i is `x[i]` of the published arrays.
        disable_shuffling=True,
        homepage="https://github.com/greydanus/mnist1d",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # generated, nothing to download
    # Imported here: it takes ~1.5 s, and only building needs it.
    from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=g-import-not-at-top
    data = make_dataset(get_dataset_args())
    return {
        "train": self._generate_examples(data["x"], data["y"]),
        "test": self._generate_examples(data["x_test"], data["y_test"]),
    }

  def _generate_examples(self, xs, ys):
    for i, (x, y) in enumerate(zip(xs, ys)):
      yield i, {"inputs": x.astype(np.float32), "label": int(y)}
