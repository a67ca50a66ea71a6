"""Classification datasets: (image or inputs, label) examples, TFDS image sets and mnist1d;
also images without labels (binarized_mnist), for the generative models' tasks.

Splits that encode to less than the pipeline's in-memory budget (pipeline.IN_MEMORY_BYTES)
are decoded once and kept in memory as arrays; larger ones are read and decoded from disk
one batch at a time. Datasets whose image feature has no fixed shape (ImageNet's) are always
read from disk, since decoded JPEGs are many times their encoded size.
"""

import dataclasses
import functools
from typing import Sequence

from deeplearn.data import preprocess
from deeplearn.data.readers.base import Columns, Reader
from deeplearn.data.tfds_io import checked_source, data_source, encoded_bytes, fixed_size


@dataclasses.dataclass(frozen=True)
class Classification(Reader):
  """Reads (image or inputs[, label]) examples."""
  task = "classification"
  in_memory_bytes: int  # the largest encoded split decoded into memory

  def table(self, split, key):
    return _examples(self.builder, split, fixed_size(self.builder)
                     and encoded_bytes(self.builder, split) <= self.in_memory_bytes)

  def first(self, split, key):
    # Sampled without decoding the whole split.
    return [_classification_example(checked_source(self.builder, split, key)[0])]

  def info(self):
    features = self.builder.info.features
    return {**super().info(),
            "num_classes": features["label"].num_classes if "label" in features else None}


@dataclasses.dataclass(frozen=True)
class Records:
  """A split too large for memory, read and decoded from the TFDS data source per batch."""
  source: Sequence

  def __len__(self):
    return len(self.source)

  def take(self, idx) -> dict:
    return preprocess.stack(self.examples(idx))

  def examples(self, idx) -> list[dict]:
    return [_classification_example(self.source[int(i)]) for i in idx]


@functools.lru_cache(maxsize=16)
def _examples(builder, split, in_memory):
  source = data_source(builder, split)
  if not in_memory:
    return Records(source)
  return Columns(preprocess.stack([_classification_example(source[i])
                                   for i in range(len(source))]))


def _classification_example(example):
  # Models always take `inputs`: TFDS image datasets call them `image`.
  out = {"inputs": example["image"] if "image" in example else example["inputs"]}
  if "label" in example:
    out["label"] = example["label"]
  return out
