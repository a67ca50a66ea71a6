"""Language modelling datasets: a `text` feature, read as windows of character token ids.

A split's text is tokenised whole, by the chars of the builder's `vocab` metadata (deeplearn's
tiny_shakespeare stores one), and cut into windows of config.data.seq_len + 1 tokens at
stride seq_len.
"""

import dataclasses
import functools

import numpy as np

from deeplearn.data.readers.base import Columns, Reader, char_vocab
from deeplearn.data.tfds_io import as_text, data_source


@dataclasses.dataclass(frozen=True)
class LanguageModel(Reader):
  """Reads a `text` feature as windows of `seq_len` + 1 tokens."""
  task = "language_model"
  seq_len: int | None

  def table(self, split, key):
    seq_len = self.seq_len
    if not seq_len or seq_len <= 0:
      raise ValueError(f"config.data.seq_len={seq_len!r}: {self.builder.name} is a language "
                       "modelling dataset, set seq_len to the training sequence length")
    tokens = _tokens(self.builder, split)
    if len(tokens) <= seq_len:
      raise ValueError(f"config.data.seq_len={seq_len} leaves no window in {key}={split!r} "
                       f"({len(tokens)} tokens)")
    return _windows(tokens, seq_len)

  def num_examples(self, split, key):
    # Windows, from the tokens that are cheap to hold.
    return len(self.checked_table(split, key))

  def info(self):
    vocab = char_vocab(self.builder)
    return {**super().info(), "vocab_size": len(vocab), "vocab": vocab}


@functools.lru_cache(maxsize=16)
def _tokens(builder, split):
  """The split's text as int32 token ids, id = index in the builder's `vocab` metadata."""
  vocab = char_vocab(builder)
  source = data_source(builder, split)
  text = "".join(as_text(source[i]["text"]) for i in range(len(source)))
  codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
  vocab_codes = np.frombuffer(vocab.encode("utf-32-le"), np.uint32)  # sorted, as vocab is
  ids = np.searchsorted(vocab_codes, codes).clip(0, len(vocab) - 1)
  if not np.array_equal(vocab_codes[ids], codes):
    raise ValueError(f"{builder.name}[{split}] has chars outside its vocab")
  return ids.astype(np.int32)


def _windows(tokens, seq_len):
  # Non-overlapping windows of seq_len + 1 at stride seq_len, as strided views: the targets
  # are the inputs shifted by one, and a window's last target is the next window's first input.
  windows = np.lib.stride_tricks.sliding_window_view(tokens, seq_len + 1)[::seq_len]
  return Columns({"inputs": windows[:, :-1], "targets": windows[:, 1:]})
