"""Input pipeline: a TFDS builder's split, read through grain into numpy batches.

Deterministic (the order and the random preprocessing follow from the seed alone), sharded per
process, checkpointable (the iterator's state is the index of the next batch). Batches are
built whole, by index: the pipeline's per-step cost is a gather plus a few numpy ops, which
keeps it far ahead of a small model's millisecond steps. A pp spec with per-example ops
(`preprocess`'s docstring: resizing and cropping images of any size, as ImageNet's) instead
reads the batch's examples one by one, runs those ops on each, and stacks the results.

What a split's examples are is up to the dataset's kind, which `readers.reader` picks once
from the builder's features (classification, language modelling, source/target pairs,
translation): the kind's reader builds the split's table and its part of the DatasetInfo.
`tfds_io` opens and prepares the builders.

A process's batches are slices of one global stream of local-size batches: batch j of process
i is stream batch j * process_count + i. So global batch j, the processes' batches j laid side
by side in process order, is the same examples for any process count.
"""

import dataclasses
import functools
import math
import sys

from absl import flags
import grain
import numpy as np

from deeplearn.data import preprocess, readers, tfds_io
# Re-exported, with _open and _Records below: tests register builders, open them and check a
# table's type through the pipeline.
from deeplearn.data.builders import BUILDERS  # noqa: F401  pylint: disable=unused-import

# Splits that encode to less than this are decoded once and kept in memory as arrays; larger
# ones are read and decoded from disk one batch at a time (readers.classification).
IN_MEMORY_BYTES = 2 << 30
# A bare `standardize` measures at most this many training examples, spread evenly.
STATS_EXAMPLES = 50_000
# ... and, when pp has per-example ops, this many at a time.
STATS_CHUNK = 256
# grain's default, 16 reader threads for each iterator, only costs time on these small batches.
_READ = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)

_open, _Records = tfds_io.open_builder, readers.Records


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and a train loop need to know about a dataset."""
  name: str
  num_examples: dict      # split name -> examples (language models: windows of seq_len + 1)
  num_classes: int | None  # classification
  vocab_size: int | None  # language modelling, seq2seq
  vocab: str | None       # language modelling, dates: chars, index = token id
  input_shape: tuple      # one example's "inputs" after pp_eval
  task: str               # "classification", "language_model" or "seq2seq"
  bos_id: int | None = None  # seq2seq: what the decoder reads first
  eos_id: int | None = None  # seq2seq: what ends a target
  tokenizer: str | None = None  # translation: the SentencePiece model file (subword.Tokenizer)


def get_info(data_cfg) -> DatasetInfo:
  """The dataset's DatasetInfo; cached, so only the first call reads data."""
  return _info(tfds_io.open_builder(data_cfg), data_cfg.dataset, data_cfg.get("seq_len"),
               data_cfg.get("train_split", "train"), data_cfg.get("eval_split", "test"),
               data_cfg.get("pp_eval", ""), _translation(data_cfg))


def train_dataset(data_cfg, *, seed: int, process_index: int,
                  process_count: int) -> grain.IterDataset:
  """Endless training batches of this process: reshuffled each epoch, pp_train applied."""
  batch_size = _local_batch_size(data_cfg, "batch_size", process_index, process_count)
  builder = tfds_io.open_builder(data_cfg)
  train_split = data_cfg.get("train_split", "train")
  table = _table(builder, train_split, "config.data.train_split", data_cfg.get("seq_len"),
                 _translation(data_cfg))
  pp = _preprocess(builder, data_cfg.get("pp_train", ""), "pp_train", train_split)
  ds = grain.MapDataset.range(sys.maxsize).map(_ShuffledIndices(
      len(table), batch_size, seed, shuffle=data_cfg.get("shuffle", True)))
  # Random ops are seeded by the stream index, before the slice, so that no two processes
  # share augmentation draws.
  batch = _Preprocessed(table, pp)
  ds = ds.random_map(batch, seed=seed) if pp.random else ds.map(functools.partial(batch, rng=None))
  ds = ds.map(_finalize).slice(slice(process_index, None, process_count))
  return _Batches(ds, data_cfg.get("num_workers", 0))


def eval_dataset(data_cfg, *, split: str | None = None, process_index: int,
                 process_count: int) -> grain.IterDataset:
  """The split once, in order, pp_eval applied, padded to whole global batches.

  Each batch has `mask` float32 [B]: 1 for a real example, 0 for padding, so that summed
  metrics count every example exactly once. Every process yields the same number of batches.
  Each `iter()` starts again from the beginning.
  """
  batch_size = _local_batch_size(data_cfg, "eval_batch_size", process_index, process_count)
  builder = tfds_io.open_builder(data_cfg)
  key = "config.data.eval_split" if split is None else "eval_dataset(split=...)"
  split = data_cfg.get("eval_split", "test") if split is None else split
  table = _table(builder, split, key, data_cfg.get("seq_len"), _translation(data_cfg))
  pp = _preprocess(builder, data_cfg.get("pp_eval", ""), "pp_eval",
                   data_cfg.get("train_split", "train"))
  if pp.random:
    raise ValueError(f"config.data.pp_eval={data_cfg.pp_eval!r} has random ops; evaluation "
                     "must see every example as it is")
  global_batch = batch_size * process_count
  num_stream_batches = math.ceil(len(table) / global_batch) * process_count
  ds = grain.MapDataset.range(num_stream_batches).map(_PaddedBatches(table, batch_size, pp))
  ds = ds.map(_finalize)
  return ds.slice(slice(process_index, None, process_count)).to_iter_dataset(_READ)


class _Batches(grain.IterDataset):
  """A process's training batches, read in worker processes or not.

  Its iterators' state is the number of batches taken, `{"next_index": k}`, whatever
  num_workers is: grain's own state for mp_prefetch is one position per worker, which
  neither a different worker count nor a plain iterator can restore. Batch k is a function
  of k alone, so a restored iterator restarts the pipeline at k, and a resumed run may
  change config.data.num_workers.
  """

  def __init__(self, batches: grain.MapDataset, num_workers: int):
    super().__init__()
    self.batches, self.num_workers = batches, num_workers

  def __iter__(self):
    return _BatchIterator(self)

  def start(self, k: int) -> grain.DatasetIterator:
    ds = self.batches[k:].to_iter_dataset(_READ)
    if self.num_workers > 0:
      if not flags.FLAGS.is_parsed():
        # grain 0.2.18's mp_prefetch reads one of its absl flags (worker profiling, when jax
        # is installed) without checking that flags were parsed: outside absl.app, defaults.
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers))
    return iter(ds)


class _BatchIterator(grain.DatasetIterator):
  """Counts the batches it hands out; the pipeline starts at the first `next`."""

  def __init__(self, ds: _Batches):
    super().__init__()
    self._ds, self._next, self._it = ds, 0, None

  def __next__(self):
    if self._ds.num_workers == 0:
      # In this process batch k is the map dataset's element k: indexed directly, with
      # none of grain's per-`next` iterator layers and statistics (60-100 us per batch
      # of MNIST-1D on the 2-core machine, as much as the rest of the pipeline).
      batch = self._ds.batches[self._next]
    else:
      if self._it is None:
        self._it = self._ds.start(self._next)
      batch = next(self._it)
    self._next += 1
    return batch

  def get_state(self):
    return {"next_index": self._next}

  def set_state(self, state):
    self._stop()
    self._next = int(state["next_index"])

  def start_prefetch(self):
    if self._ds.num_workers == 0:
      return  # batches are computed on request
    if self._it is None:
      self._it = self._ds.start(self._next)
    self._it.start_prefetch()

  def close(self):
    self._stop()
    super().close()

  def _stop(self):
    if self._it is not None:
      self._it.close()  # ends worker processes
      self._it = None


class _ShuffledIndices:
  """Example indices of batch k of the endless stream of epochs, each epoch a new permutation
  (or, with shuffle=False, the split's order every epoch).

  grain's `shuffle` computes one permuted index per call, about 9 us each on this CPU, which
  alone holds mnist1d at ~1,000 batches/s; a numpy permutation per epoch is ~100x cheaper.
  The permutation of epoch e is drawn from numpy's Generator seeded with (seed, e).
  """

  def __init__(self, num_examples, batch_size, seed, shuffle=True):
    self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
    self.shuffle = shuffle  # False: every epoch the identity (the split's order)
    self._perms = {}  # epoch -> permutation, for the current and the previous epoch

  def __call__(self, k):
    n = self.num_examples
    epoch, start = divmod(k * self.batch_size, n)
    if start + self.batch_size <= n:  # within one epoch: a slice of its permutation
      return self._permutation(epoch)[start:start + self.batch_size]
    epoch, pos = np.divmod(np.arange(k * self.batch_size, (k + 1) * self.batch_size), n)
    idx = np.empty_like(pos)
    for e in np.unique(epoch):
      idx[epoch == e] = self._permutation(int(e))[pos[epoch == e]]
    return idx

  def _permutation(self, epoch):
    if not self.shuffle:
      if not self._perms:
        self._perms = {None: np.arange(self.num_examples)}
      return self._perms[None]
    if epoch not in self._perms:
      self._perms = {e: p for e, p in self._perms.items() if e == epoch - 1}
      self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(
          self.num_examples)
    return self._perms[epoch]


@dataclasses.dataclass(frozen=True)
class _Preprocessed:
  """The table's examples `idx` as one batch through pp: `(idx, rng) -> batch`."""
  table: readers.Table
  pp: preprocess.Op

  def __call__(self, idx, rng):
    return self.pp.fn(_gather(self.table, idx, self.pp), rng)


@dataclasses.dataclass(frozen=True)
class _PaddedBatches:
  """Batch k of the split in order, pp applied; past its end zeros, marked by `mask`."""
  table: readers.Table
  batch_size: int
  pp: preprocess.Op

  def __call__(self, k):
    pos = np.arange(k * self.batch_size, (k + 1) * self.batch_size)
    real = pos < len(self.table)
    batch = _Preprocessed(self.table, self.pp)(np.minimum(pos, len(self.table) - 1), None)
    batch = {name: np.where(real.reshape((-1,) + (1,) * (v.ndim - 1)), v, 0).astype(v.dtype)
             for name, v in batch.items()}
    return {**batch, "mask": real.astype(np.float32)}


def _gather(table, idx, pp):
  # Per-example ops take the examples unstacked; the others, the whole batch at once.
  return table.examples(idx) if pp.per_example else table.take(idx)


def _finalize(batch):
  # The batch format models rely on: float32 inputs and int32 labels, int32 tokens.
  if "label" in batch:
    batch = {**batch, "inputs": batch["inputs"].astype(np.float32, copy=False),
             "label": batch["label"].astype(np.int32, copy=False)}
  return batch


def _local_batch_size(data_cfg, key, process_index, process_count):
  total = data_cfg[key]
  if total <= 0 or total % process_count:
    raise ValueError(f"config.data.{key}={total} must be a positive multiple of the process "
                     f"count {process_count}: each process takes {key} // {process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is outside 0..{process_count - 1}")
  return total // process_count


def _table(builder, split, key, seq_len, translation=None):
  """The split's examples as a table of batchable columns; `key` names where split came from.

  `translation`: how a translation dataset becomes token ids (_translation(data_cfg)).
  """
  # First, so that a misspelt split is named even where the features are unreadable.
  tfds_io.checked_source(builder, split, key)
  return _reader(builder, seq_len, translation).table(split, key)


def _reader(builder, seq_len, translation):
  # IN_MEMORY_BYTES is read at each call, so that tests can lower it.
  return readers.reader(builder, seq_len, translation, IN_MEMORY_BYTES)


def _translation(data_cfg):
  return readers.TranslationConfig(
      data_cfg.get("data_dir"), data_cfg.get("train_split", "train"),
      data_cfg.get("vocab_size", 0), data_cfg.get("tokenizer_examples", 100_000),
      data_cfg.get("source_language", ""))


def _preprocess(builder, spec, key, train_split):
  try:
    pp = preprocess.build(spec, stats=lambda prefix: _moments(builder, train_split, prefix))
  except ValueError as e:
    raise ValueError(f"config.data.{key}={spec!r}: {e}") from e
  if not pp.per_example and not tfds_io.fixed_size(builder):
    raise ValueError(f"config.data.{key}={spec!r}: {builder.name}'s images differ in size, so "
                     "the spec must resize or crop each one before they are batched: start it "
                     "with e.g. 'random_resized_crop(224)' for training, "
                     "'resize_small(256)|central_crop(224)' for evaluation")
  return pp


@functools.lru_cache(maxsize=None)
def _moments(builder, split, prefix):
  """Per-channel mean and std of the training inputs as the ops in `prefix` leave them."""
  table = _table(builder, split, "config.data.train_split", None)
  idx = np.unique(np.linspace(0, len(table) - 1, min(len(table), STATS_EXAMPLES)).astype(int))
  pp = preprocess.build(prefix, stats=lambda p: _moments(builder, split, p))
  if not pp.per_example:
    return preprocess.moments(pp.fn(table.take(idx), None)["inputs"])
  # Examples of any size are measured a chunk at a time: held whole, 50,000 ImageNet crops
  # of 224x224 would take 7.5 GB.
  chunks = np.array_split(idx, math.ceil(len(idx) / STATS_CHUNK))
  return preprocess.pooled_moments(pp.fn(table.examples(c), None)["inputs"] for c in chunks)


@functools.lru_cache(maxsize=None)
def _info(builder, name, seq_len, train_split, eval_split, pp_eval, translation):
  kind = _reader(builder, seq_len, translation)
  keys = {**{s: "split" for s in builder.info.splits}, train_split: "config.data.train_split",
          eval_split: "config.data.eval_split"}
  num_examples = {s: kind.num_examples(s, key) for s, key in keys.items()}
  first = kind.first(eval_split, "config.data.eval_split")
  inputs = _finalize(_preprocess(builder, pp_eval, "pp_eval", train_split).fn(first, None))
  return DatasetInfo(name=name, num_examples=num_examples,
                     input_shape=tuple(inputs["inputs"].shape[1:]), task=kind.task,
                     **kind.info())
