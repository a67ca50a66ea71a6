"""Translation datasets, read through subwords.

A TFDS translation dataset (`wmt14_translate/de-en`, `wmt_t2t_translate/de-en`: examples
`{"de": text, "en": text}`) is a sequence to sequence dataset: a SentencePiece model of
config.data.vocab_size pieces, shared by both languages, is trained once on
config.data.tokenizer_examples training pairs and cached under data_dir; `inputs` (source,
config.data.source_language, "" = the pair's first) and `targets` are the pieces, EOS, PAD,
config.data.seq_len per side. Training pairs longer than that on either side are dropped,
pairs of other splits truncated (no EOS then); both counted in the log.
"""

import dataclasses
import functools
import math
import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from deeplearn.config import did_you_mean
from deeplearn.data import subword
from deeplearn.data.readers.base import Columns, Reader
from deeplearn.data.tfds_io import as_text, checked_source, data_source, mocked

# Translation splits are read and tokenised this many pairs at a time (WMT14 has 4.5 million).
TRANSLATION_CHUNK = 65_536


@dataclasses.dataclass(frozen=True)
class TranslationConfig:
  """The config of a translation dataset's tokenisation (hashable: a cache key)."""
  data_dir: str | None
  train_split: str
  vocab_size: int
  examples: int
  source: str  # "": the pair's first language
  target: str = ""


@dataclasses.dataclass(frozen=True)
class Translation(Reader):
  """Reads language pairs as subword ids, `seq_len` per side."""
  task = "seq2seq"
  seq_len: int | None
  # None where the caller has none (pipeline._moments): building a table then asks for it.
  translation: TranslationConfig | None

  def table(self, split, key):
    return _translated(self.builder, split, self._checked(), self.seq_len)

  def num_examples(self, split, key):
    # Pairs kept, after dropping the long training ones.
    return len(self.checked_table(split, key))

  def info(self):
    tokenizer = _tokenizer(self.builder, self._checked())
    return {**super().info(), "vocab_size": tokenizer.vocab_size, "bos_id": subword.BOS_ID,
            "eos_id": subword.EOS_ID, "tokenizer": tokenizer.path}

  def _checked(self):
    return _checked_translation(self.builder, self.translation, self.seq_len)


def is_translation(builder):
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
  if mocked(builder):  # never read by a run on the real set
    split = f"mock-{split}"
  path = os.path.join(t.data_dir or tfds.core.constants.DATA_DIR, "deeplearn_subword",
                      builder.info.full_name, f"{split}-bpe{t.vocab_size}-n{t.examples}.model")

  def texts():
    source = checked_source(builder, t.train_split, "config.data.train_split")
    n = len(source)
    idx = np.unique(np.linspace(0, n - 1, min(n, t.examples)).astype(int))
    for chunk in np.array_split(idx, math.ceil(len(idx) / TRANSLATION_CHUNK)):
      for e in source.__getitems__([int(i) for i in chunk]):
        yield from (as_text(e[lang]) for lang in builder.info.features.languages)

  return subword.cached(path, texts, t.vocab_size)


@functools.lru_cache(maxsize=16)
def _translated(builder, split, translation, seq_len):
  """A translation split as subword ids: `inputs` and `targets` [N, seq_len], each the
  pieces, EOS, then PAD. Pairs longer than seq_len on either side are dropped from the
  training split and truncated (without EOS) elsewhere: evaluation sees every pair."""
  tokenizer = _tokenizer(builder, translation)
  source = data_source(builder, split)
  n = len(source)
  columns = {"inputs": np.zeros((n, seq_len), np.int32),
             "targets": np.zeros((n, seq_len), np.int32)}
  too_long = np.zeros(n, bool)
  for start in range(0, n, TRANSLATION_CHUNK):
    examples = source.__getitems__(range(start, min(n, start + TRANSLATION_CHUNK)))
    for key, lang in (("inputs", translation.source), ("targets", translation.target)):
      ids = tokenizer.encode([as_text(e[lang]) for e in examples])
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
  return Columns(columns)
