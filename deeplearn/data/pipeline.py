"""Input pipeline: a TFDS builder's split, read through grain into numpy batches.

Deterministic (the order and the random preprocessing follow from the seed alone), sharded per
process, checkpointable (the iterator's state is the index of the next batch). Batches are
built whole, by index: the pipeline's per-step cost is a gather plus a few numpy ops, which
keeps it far ahead of a small model's millisecond steps. A pp spec with per-example ops
(`preprocess`'s docstring: resizing and cropping images of any size, as ImageNet's) instead
reads the batch's examples one by one, runs those ops on each, and stacks the results; such
datasets (an image feature without a fixed shape) are always read from disk, since decoded
JPEGs are many times their encoded size.

A builder with `source` and `target` text features (deeplearn's `dates`) is a sequence to
sequence dataset: its splits are tokenised once, in memory, by the chars of its `vocab`
metadata, into `inputs` and `targets` padded to its `source_len` / `target_len` (`_pairs`).
A TFDS translation dataset (`wmt14_translate/de-en`, `wmt_t2t_translate/de-en`: examples
`{"de": text, "en": text}`) is one too, through subwords (`_translated`): a SentencePiece
model of config.data.vocab_size pieces, shared by both languages, is trained once on
config.data.tokenizer_examples training pairs and cached under data_dir; `inputs` (source,
config.data.source_language, "" = the pair's first) and `targets` are the pieces, EOS, PAD,
config.data.seq_len per side. Training pairs longer than that on either side are dropped,
pairs of other splits truncated (no EOS then); both counted in the log.

Datasets that TFDS prepares from files downloaded by hand (imagenet2012) look for them in
config.data.manual_dir, by default <data_dir>/downloads/manual.

A process's batches are slices of one global stream of local-size batches: batch j of process
i is stream batch j * process_count + i. So global batch j, the processes' batches j laid side
by side in process order, is the same examples for any process count.
"""

import dataclasses
import functools
import math
import os
import sys
from typing import Sequence

from absl import flags
from absl import logging
import grain
import numpy as np
import tensorflow_datasets as tfds
# Registers the wmt*_translate builders: tfds 4.9.10 finds the other catalog datasets by
# name, but not these.
import tensorflow_datasets.translate  # noqa: F401  pylint: disable=unused-import

from deeplearn.config import did_you_mean
from deeplearn.data import preprocess, subword
from deeplearn.data.builders import BUILDERS
from deeplearn.data.builders.dates import BOS, EOS

# Splits that encode to less than this are decoded once and kept in memory as arrays; larger
# ones are read and decoded from disk one batch at a time.
IN_MEMORY_BYTES = 2 << 30
# A bare `standardize` measures at most this many training examples, spread evenly.
STATS_EXAMPLES = 50_000
# ... and, when pp has per-example ops, this many at a time.
STATS_CHUNK = 256
# Translation splits are read and tokenised this many pairs at a time (WMT14 has 4.5 million).
TRANSLATION_CHUNK = 65_536
# grain's default, 16 reader threads for each iterator, only costs time on these small batches.
_READ = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


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
  return _info(data_cfg.dataset, data_cfg.get("data_dir"), data_cfg.get("prepare", True),
               data_cfg.get("manual_dir"), data_cfg.get("seq_len"),
               data_cfg.get("train_split", "train"), data_cfg.get("eval_split", "test"),
               data_cfg.get("pp_eval", ""), _translation(data_cfg))


def train_dataset(data_cfg, *, seed: int, process_index: int,
                  process_count: int) -> grain.IterDataset:
  """Endless training batches of this process: reshuffled each epoch, pp_train applied."""
  batch_size = _local_batch_size(data_cfg, "batch_size", process_index, process_count)
  builder = _open(data_cfg)
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
  builder = _open(data_cfg)
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
  table: "_Columns | _Records"
  pp: preprocess.Op

  def __call__(self, idx, rng):
    return self.pp.fn(_gather(self.table, idx, self.pp), rng)


@dataclasses.dataclass(frozen=True)
class _PaddedBatches:
  """Batch k of the split in order, pp applied; past its end zeros, marked by `mask`."""
  table: "_Columns | _Records"
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


@dataclasses.dataclass(frozen=True)
class _Columns:
  """A split held in memory as arrays with a leading example axis."""
  columns: dict

  def __len__(self):
    return len(next(iter(self.columns.values())))

  def take(self, idx) -> dict:
    return {name: v[idx] for name, v in self.columns.items()}

  def examples(self, idx) -> list[dict]:
    return [{name: v[i] for name, v in self.columns.items()} for i in idx]


@dataclasses.dataclass(frozen=True)
class _Records:
  """A split too large for memory, read and decoded from the TFDS data source per batch."""
  source: Sequence

  def __len__(self):
    return len(self.source)

  def take(self, idx) -> dict:
    return preprocess.stack(self.examples(idx))

  def examples(self, idx) -> list[dict]:
    return [_classification_example(self.source[int(i)]) for i in idx]


def _finalize(batch):
  # The batch format models rely on: float32 inputs and int32 labels, int32 tokens.
  if "label" in batch:
    batch = {**batch, "inputs": batch["inputs"].astype(np.float32, copy=False),
             "label": batch["label"].astype(np.int32, copy=False)}
  return batch


def _classification_example(example):
  # Models always take `inputs`: TFDS image datasets call them `image`.
  return {"inputs": example["image"] if "image" in example else example["inputs"],
          "label": example["label"]}


def _local_batch_size(data_cfg, key, process_index, process_count):
  total = data_cfg[key]
  if total <= 0 or total % process_count:
    raise ValueError(f"config.data.{key}={total} must be a positive multiple of the process "
                     f"count {process_count}: each process takes {key} // {process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is outside 0..{process_count - 1}")
  return total // process_count


def _task(builder):
  features = builder.info.features
  if _is_translation(builder):
    return "seq2seq"
  if "text" in features:
    return "language_model"
  if "source" in features and "target" in features:
    return "seq2seq"
  if "label" in features and ("image" in features or "inputs" in features):
    return "classification"
  raise ValueError(f"{builder.name} has features {list(features)}: deeplearn reads "
                   "(image or inputs, label) for classification, text for language models, or "
                   "(source, target) for sequence to sequence")


def _open(data_cfg):
  return _builder(data_cfg.dataset, data_cfg.get("data_dir"), data_cfg.get("prepare", True),
                  data_cfg.get("manual_dir"))


@functools.lru_cache(maxsize=None)
def _builder(name, data_dir, prepare, manual_dir=None):
  """The prepared builder: ours for the offline datasets, otherwise the TFDS catalog's."""
  def make():
    if name in BUILDERS:
      return BUILDERS[name](data_dir=data_dir, file_format="array_record")
    try:
      return tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError as e:
      # Suggestions search the catalog too; the message lists only ours, the catalog is long.
      catalog = tfds.list_builders(with_community_datasets=False)
      base = name.split("/")[0].split(":")[0]  # "mnist/3.0.1" -> "mnist"
      raise ValueError(f"config.data.dataset={name!r} is neither one of deeplearn's datasets "
                       f"nor in the TFDS catalog; {did_you_mean(base, [*BUILDERS, *catalog])}"
                       f"deeplearn's: {', '.join(BUILDERS)}; the catalog: "
                       "tfds.list_builders()") from e

  builder = make()
  if not builder.is_prepared():
    if not prepare:
      raise ValueError(f"config.data.prepare=False, but {name} is not prepared in "
                       f"{builder.data_dir}")
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except AssertionError as e:
      if not getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        raise
      # TFDS's message names the folder it looked in and the files it wants there.
      raise ValueError(f"config.data.dataset={name!r} is prepared from files you download by "
                       f"hand, and TFDS did not find them: {e}\nPut them in that folder, or "
                       "set config.data.manual_dir to where they are, and run again: TFDS "
                       "then prepares the dataset once, into config.data.data_dir.") from e
    except ImportError as e:
      if "tensorflow" not in str(e):
        raise
      raise ValueError(f"TFDS's {name} builder imports TensorFlow to prepare the dataset, "
                       "once (reading it afterwards does not): pip install tensorflow-cpu for "
                       "the preparation, or prepare it on another machine and point "
                       "config.data.data_dir at a copy") from e
    except FileExistsError:
      # Processes sharing a data_dir race to prepare: the loser's final rename finds the
      # winner's copy, which is the same data. Read that one.
      builder = make()
      if not builder.is_prepared():
        raise
  return builder


def _table(builder, split, key, seq_len, translation=None):
  """The split's examples as a table of batchable columns; `key` names where split came from.

  `translation`: how a translation dataset becomes token ids (_translation(data_cfg)).
  """
  _checked_source(builder, split, key)
  if _task(builder) == "language_model":
    if not seq_len or seq_len <= 0:
      raise ValueError(f"config.data.seq_len={seq_len!r}: {builder.name} is a language "
                       "modelling dataset, set seq_len to the training sequence length")
    tokens = _tokens(builder, split)
    if len(tokens) <= seq_len:
      raise ValueError(f"config.data.seq_len={seq_len} leaves no window in {key}={split!r} "
                       f"({len(tokens)} tokens)")
    return _windows(tokens, seq_len)
  if _is_translation(builder):
    return _translated(builder, split, _checked_translation(builder, translation, seq_len),
                       seq_len)
  if _task(builder) == "seq2seq":
    return _pairs(builder, split)
  return _examples(builder, split,
                   _fixed_size(builder) and _encoded_bytes(builder, split) <= IN_MEMORY_BYTES)


def _fixed_size(builder):
  """Whether every example's inputs have one shape (not so for ImageNet's images)."""
  features = builder.info.features
  name = next((n for n in ("image", "inputs") if n in features), None)
  return name is None or None not in features[name].shape


def _checked_source(builder, split, key):
  try:
    return _source(builder, split)
  except ValueError as e:
    base = split.split("[")[0]  # "train[:80%]" -> "train"
    raise ValueError(f"{key}={split!r}: {did_you_mean(base, builder.info.splits)}{e}") from e


@functools.lru_cache(maxsize=None)
def _source(builder, split):
  return builder.as_data_source(split=split)


def _encoded_bytes(builder, split):
  try:
    return builder.info.splits[split].num_bytes
  except (KeyError, ValueError):  # e.g. under tfds.testing.mock_data: no split metadata
    return 0


@functools.lru_cache(maxsize=16)
def _examples(builder, split, in_memory):
  source = _source(builder, split)
  if not in_memory:
    return _Records(source)
  return _Columns(preprocess.stack([_classification_example(source[i])
                                     for i in range(len(source))]))


@functools.lru_cache(maxsize=16)
def _tokens(builder, split):
  """The split's text as int32 token ids, id = index in the builder's `vocab` metadata."""
  vocab = _vocab(builder)
  source = _source(builder, split)
  text = "".join(_text(source[i]["text"]) for i in range(len(source)))
  codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
  vocab_codes = np.frombuffer(vocab.encode("utf-32-le"), np.uint32)  # sorted, as vocab is
  ids = np.searchsorted(vocab_codes, codes).clip(0, len(vocab) - 1)
  if not np.array_equal(vocab_codes[ids], codes):
    raise ValueError(f"{builder.name}[{split}] has chars outside its vocab")
  return ids.astype(np.int32)


@functools.lru_cache(maxsize=16)
def _pairs(builder, split):
  """A seq2seq split as token ids: `inputs` [N, source_len] (the source, PAD after it) and
  `targets` [N, target_len] (the target, EOS, PAD after it). PAD is "\x00" (id 0: the
  vocab is sorted) and EOS "\x03" (deeplearn.data.builders.dates); the lengths come from
  the builder's metadata."""
  vocab, meta = _vocab(builder), builder.info.metadata
  source = _source(builder, split)
  examples = source.__getitems__(range(len(source)))  # one read: 7x faster than one by one
  vocab_codes = np.frombuffer(vocab.encode("utf-32-le"), np.uint32)
  columns = {}
  for key, feature, end, length in (("inputs", "source", "", meta["source_len"]),
                                    ("targets", "target", EOS, meta["target_len"])):
    texts = [_text(e[feature]) + end for e in examples]
    if max(map(len, texts)) > length:
      raise ValueError(f"{builder.name}[{split}] has a {feature} longer than {length}")
    codes = np.frombuffer("".join(t.ljust(length, "\x00") for t in texts).encode("utf-32-le"),
                          np.uint32).reshape(len(texts), length)
    ids = np.searchsorted(vocab_codes, codes).clip(0, len(vocab) - 1)
    if not np.array_equal(vocab_codes[ids], codes):
      raise ValueError(f"{builder.name}[{split}] has chars outside its vocab")
    columns[key] = ids.astype(np.int32)
  return _Columns(columns)


@dataclasses.dataclass(frozen=True)
class _Translation:
  """The config of a translation dataset's tokenisation (hashable: a cache key)."""
  data_dir: str | None
  train_split: str
  vocab_size: int
  examples: int
  source: str  # "": the pair's first language
  target: str = ""


def _translation(data_cfg):
  return _Translation(data_cfg.get("data_dir"), data_cfg.get("train_split", "train"),
                      data_cfg.get("vocab_size", 0), data_cfg.get("tokenizer_examples", 100_000),
                      data_cfg.get("source_language", ""))


def _is_translation(builder):
  return isinstance(builder.info.features, tfds.features.Translation)


def _checked_translation(builder, translation, seq_len):
  """`translation` with both languages named, or a ValueError saying which key to set."""
  languages = list(builder.info.features.languages)
  if translation is None:
    raise ValueError(f"{builder.name} is a translation dataset: pass _translation(data_cfg)")
  if translation.vocab_size <= 0:
    raise ValueError(f"config.data.vocab_size={translation.vocab_size}: {builder.name} is "
                     "read as subwords; set the vocabulary size (8000 to 32000 for WMT)")
  if not seq_len or seq_len <= 0:
    raise ValueError(f"config.data.seq_len={seq_len!r}: {builder.name} is a translation "
                     "dataset, set seq_len to the subword tokens per side (EOS included)")
  if translation.examples <= 0:
    raise ValueError(f"config.data.tokenizer_examples={translation.examples} must be positive")
  source = translation.source or languages[0]
  if source not in languages or len(languages) != 2:
    raise ValueError(f"config.data.source_language={translation.source!r}: {builder.name} "
                     f"translates between {languages}; {did_you_mean(source, languages)}")
  target = next(lang for lang in languages if lang != source)
  return dataclasses.replace(translation, source=source, target=target)


@functools.lru_cache(maxsize=None)
def _tokenizer(builder, translation) -> subword.Tokenizer:
  """The shared subword model, trained once on evenly spaced training pairs (both languages,
  in the dataset's order, whichever the direction) and cached under data_dir for every run."""
  t = translation
  split = "".join(c if c.isalnum() or c in "-_." else "_" for c in t.train_split)
  path = os.path.join(t.data_dir or tfds.core.constants.DATA_DIR, "deeplearn_subword",
                      builder.info.full_name, f"{split}-bpe{t.vocab_size}-n{t.examples}.model")

  def texts():
    source = _checked_source(builder, t.train_split, "config.data.train_split")
    n = len(source)
    idx = np.unique(np.linspace(0, n - 1, min(n, t.examples)).astype(int))
    for chunk in np.array_split(idx, math.ceil(len(idx) / TRANSLATION_CHUNK)):
      for e in source.__getitems__([int(i) for i in chunk]):
        yield from (_text(e[lang]) for lang in builder.info.features.languages)

  return subword.cached(path, texts, t.vocab_size)


@functools.lru_cache(maxsize=16)
def _translated(builder, split, translation, seq_len):
  """A translation split as subword ids: `inputs` and `targets` [N, seq_len], each the
  pieces, EOS, then PAD. Pairs longer than seq_len on either side are dropped from the
  training split and truncated (without EOS) elsewhere: evaluation sees every pair."""
  tokenizer = _tokenizer(builder, translation)
  source = _source(builder, split)
  n = len(source)
  columns = {"inputs": np.zeros((n, seq_len), np.int32),
             "targets": np.zeros((n, seq_len), np.int32)}
  too_long = np.zeros(n, bool)
  for start in range(0, n, TRANSLATION_CHUNK):
    examples = source.__getitems__(range(start, min(n, start + TRANSLATION_CHUNK)))
    for key, lang in (("inputs", translation.source), ("targets", translation.target)):
      ids = tokenizer.encode([_text(e[lang]) for e in examples])
      for i, row in enumerate(ids, start):
        row.append(subword.EOS_ID)
        too_long[i] |= len(row) > seq_len
        columns[key][i, :min(len(row), seq_len)] = row[:seq_len]
  drop = split == translation.train_split
  if too_long.any():  # a warning: the train loop keeps only those
    logging.warning("%s[%s]: %d of %d pairs are longer than seq_len=%d subwords on a side: %s",
                    builder.info.full_name, split, too_long.sum(), n, seq_len,
                    "dropped" if drop else "truncated")
  if drop:
    if too_long.all():
      raise ValueError(f"config.data.seq_len={seq_len} drops every pair of {builder.name}"
                       f"[{split}]: raise it")
    columns = {key: v[~too_long] for key, v in columns.items()}
  return _Columns(columns)


def _text(value):
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _vocab(builder):
  vocab = (builder.info.metadata or {}).get("vocab")
  if vocab is None:
    raise ValueError(f"{builder.name} has no vocab in its metadata: language modelling reads "
                     "datasets that store one, like deeplearn's tiny_shakespeare")
  return vocab


def _windows(tokens, seq_len):
  # Non-overlapping windows of seq_len + 1 at stride seq_len, as strided views: the targets
  # are the inputs shifted by one, and a window's last target is the next window's first input.
  windows = np.lib.stride_tricks.sliding_window_view(tokens, seq_len + 1)[::seq_len]
  return _Columns({"inputs": windows[:, :-1], "targets": windows[:, 1:]})


def _preprocess(builder, spec, key, train_split):
  try:
    pp = preprocess.build(spec, stats=lambda prefix: _moments(builder, train_split, prefix))
  except ValueError as e:
    raise ValueError(f"config.data.{key}={spec!r}: {e}") from e
  if not pp.per_example and not _fixed_size(builder):
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
def _info(name, data_dir, prepare, manual_dir, seq_len, train_split, eval_split, pp_eval,
          translation):
  builder = _builder(name, data_dir, prepare, manual_dir)
  task = _task(builder)
  keys = {**{s: "split" for s in builder.info.splits}, train_split: "config.data.train_split",
          eval_split: "config.data.eval_split"}
  if _is_translation(builder):  # pairs kept, after dropping the long training ones
    num_examples = {s: len(_table(builder, s, key, seq_len, translation))
                    for s, key in keys.items()}
    first = _table(builder, eval_split, "config.data.eval_split", seq_len,
                   translation).take(np.arange(1))
  elif task == "language_model":  # windows, from the tokens that are cheap to hold
    num_examples = {s: len(_table(builder, s, key, seq_len)) for s, key in keys.items()}
    first = _table(builder, eval_split, "config.data.eval_split", seq_len).take(np.arange(1))
  elif task == "seq2seq":
    num_examples = {s: len(_checked_source(builder, s, key)) for s, key in keys.items()}
    first = _table(builder, eval_split, "config.data.eval_split", None).take(np.arange(1))
  else:  # counted and sampled without decoding whole splits
    num_examples = {s: len(_checked_source(builder, s, key)) for s, key in keys.items()}
    source = _checked_source(builder, eval_split, "config.data.eval_split")
    first = [_classification_example(source[0])]
  inputs = _finalize(_preprocess(builder, pp_eval, "pp_eval", train_split).fn(first, None))
  vocab = tokenizer = bos_id = eos_id = None
  if _is_translation(builder):
    tokenizer = _tokenizer(builder, _checked_translation(builder, translation, seq_len))
    bos_id, eos_id = subword.BOS_ID, subword.EOS_ID
  elif task in ("language_model", "seq2seq"):
    vocab = _vocab(builder)
    if task == "seq2seq":
      bos_id, eos_id = vocab.index(BOS), vocab.index(EOS)
  return DatasetInfo(
      name=name,
      num_examples=num_examples,
      num_classes=builder.info.features["label"].num_classes if task == "classification" else None,
      vocab_size=tokenizer.vocab_size if tokenizer else len(vocab) if vocab else None,
      vocab=vocab,
      input_shape=tuple(inputs["inputs"].shape[1:]),
      task=task,
      bos_id=bos_id,
      eos_id=eos_id,
      tokenizer=tokenizer.path if tokenizer else None)
