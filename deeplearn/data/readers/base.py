"""What every dataset kind's reader shares: the Reader interface and the in-memory table."""

import dataclasses
from typing import ClassVar, Protocol

import numpy as np

from deeplearn.data.tfds_io import checked_source


class Table(Protocol):
  """A split's examples, batchable by index: what a reader hands the pipeline."""

  def __len__(self) -> int: ...

  def take(self, idx) -> dict:
    """Examples `idx` as one batch: arrays with a leading example axis."""

  def examples(self, idx) -> list[dict]:
    """Examples `idx` one by one, for per-example preprocessing ops."""


@dataclasses.dataclass(frozen=True)
class Columns:
  """A split held in memory as arrays with a leading example axis."""
  columns: dict

  def __len__(self):
    return len(next(iter(self.columns.values())))

  def take(self, idx) -> dict:
    return {name: v[idx] for name, v in self.columns.items()}

  def examples(self, idx) -> list[dict]:
    return [{name: v[i] for name, v in self.columns.items()} for i in idx]


@dataclasses.dataclass(frozen=True)
class Reader:
  """A builder read as one kind of dataset; `readers.reader` picks the kind from its features.

  A kind's reader builds its splits' tables and its part of the DatasetInfo. The defaults
  here count and sample a split without building its table.
  """
  task: ClassVar[str]  # DatasetInfo.task
  builder: object

  def table(self, split, key) -> Table:
    """The split's examples as a table of batchable columns; `key` names where split came from.

    The split is checked first: checked_table, or the pipeline's _table.
    """
    raise NotImplementedError

  def checked_table(self, split, key) -> Table:
    checked_source(self.builder, split, key)
    return self.table(split, key)

  def num_examples(self, split, key) -> int:
    """How many examples the split's table has."""
    return len(checked_source(self.builder, split, key))

  def first(self, split, key):
    """The split's first example as pp_eval takes it, a batch of one (for the input shape)."""
    return self.checked_table(split, key).take(np.arange(1))

  def info(self) -> dict:
    """The kind's DatasetInfo fields: all but name, num_examples, input_shape and task."""
    return {"num_classes": None, "vocab_size": None, "vocab": None}


def char_vocab(builder):
  """The builder's `vocab` metadata: its chars, sorted, index = token id."""
  vocab = (builder.info.metadata or {}).get("vocab")
  if vocab is None:
    raise ValueError(f"{builder.name} has no vocab in its metadata: language modelling reads "
                     "datasets that store one, like deeplearn's tiny_shakespeare")
  return vocab
