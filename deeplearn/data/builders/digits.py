"""scikit-learn's handwritten digits (UCI optdigits: 1,797 real 8x8 images) as a TFDS builder.

The data ships inside scikit-learn, so it builds offline. scikit-learn has no split: ours is a
fixed permutation with seed 0, its first 1,437 examples for train and the last 360 for test.
"""

import numpy as np
import tensorflow_datasets as tfds

from deeplearn.data.builders.base import LocalBuilder

NUM_TRAIN = 1437
SPLIT_SEED = 0


class SklearnDigits(LocalBuilder, skip_registration=True):
  """Digits: `image` float32 [8, 8, 1] with the given values 0..16, `label` of 10 classes."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,  # the split's order is the permutation's
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # shipped with scikit-learn
    # Imported here: it takes ~1.5 s, and only building needs it.
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(digits.target))
    return {
        "train": self._generate_examples(digits, order[:NUM_TRAIN]),
        "test": self._generate_examples(digits, order[NUM_TRAIN:]),
    }

  def _generate_examples(self, digits, indices):
    # With shuffling disabled TFDS writes examples in key order: the key is the position.
    for key, i in enumerate(indices):
      image = digits.images[i].astype(np.float32)[..., None]  # [8, 8, 1]
      yield key, {"image": image, "label": int(digits.target[i])}
