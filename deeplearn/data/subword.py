"""Subword tokenizer: one SentencePiece BPE model shared by both languages of a translation.

Lecture concept: open-vocabulary translation. Rare words split into frequent pieces
("Abfahrtszeit" -> "▁Ab fahr ts zeit"), so no source or target word is out of vocabulary,
and one vocabulary for both sides lets names and numbers be copied piece by piece.
References: Sennrich et al., "Neural machine translation of rare words with subword units"
(BPE), 2016; Kudo & Richardson, "SentencePiece", 2018; Wu et al., "Google's neural machine
translation system" (a shared wordpiece vocabulary), 2016; Vaswani et al. 2017 (a shared
37k-piece BPE vocabulary for WMT14 en-de).

Ids follow deeplearn's seq2seq convention: PAD 0 (what Seq2Seq masks), then UNK, BOS, EOS.
Training is deterministic: the same sentences in the same order give the same model file
(one thread, no sampling of the input), so a model cached under data_dir by one process is
the model every other process would have trained.
"""

import io
import os
import tempfile
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Tokenizer:
  """A trained SentencePiece model: text <-> int ids."""

  def __init__(self, path: str):
    self.path = path
    self.sp = spm.SentencePieceProcessor(model_file=path)

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    """Each text's piece ids, without BOS or EOS."""
    return self.sp.encode(list(texts), out_type=int)

  def decode(self, ids) -> str:
    """Ids (one decoded row, e.g. greedy_decode's) -> text, up to the first EOS; PAD and
    BOS are skipped."""
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    if EOS_ID in ids:
      ids = ids[:ids.index(EOS_ID)]
    return self.sp.decode([i for i in ids if i not in (PAD_ID, BOS_ID)])


def train(texts: Iterable[str], path: str, vocab_size: int) -> Tokenizer:
  """Trains a BPE model of exactly `vocab_size` pieces on `texts`, written to `path`.

  The file appears whole or not at all (written beside it, then renamed), so processes that
  train at once leave one complete model, the same bytes from each.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
      model_type="bpe",
      # German and English: every char of the sample, none mapped to UNK.
      character_coverage=1.0,
      pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
      # Determinism: all sentences, in the given order, one thread.
      input_sentence_size=0, shuffle_input_sentence=False, num_threads=1,
      # WMT has sentences of several hundred words; SentencePiece skips longer ones.
      max_sentence_length=16384, minloglevel=2)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
  with os.fdopen(fd, "wb") as f:
    f.write(model.getvalue())
  os.replace(tmp, path)
  return Tokenizer(path)


def cached(path: str, texts, vocab_size: int) -> Tokenizer:
  """The model at `path`, trained first on `texts()` if there is none."""
  if not os.path.exists(path):
    train(texts(), path, vocab_size)
  return Tokenizer(path)
