"""Tiny shakespeare (shipped with deeplearn) tokenised for count-based language models.

The splits are the char-rnn / TFDS ones (90 / 5 / 5 %), from deeplearn.data.
"""

import re

from deeplearn.data.builders import tiny_shakespeare

# A word (letters, inner apostrophes: "call'd") or any other single non-space character.
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*|\S")


def tiny_shakespeare_sentences(split: str = "train", level: str = "word") -> list:
  """level "word": a sentence per non-empty line, its lowercased words and punctuation
  marks ("First Citizen:" -> ["first", "citizen", ":"]); "char": the split as one
  sequence of characters, newlines included (the char-rnn task)."""
  text = tiny_shakespeare.split_text(tiny_shakespeare.read_text())[split]
  if level == "char":
    return [text]
  if level == "word":
    return [WORD.findall(line.lower()) for line in text.splitlines() if line.strip()]
  raise ValueError(f"level must be 'word' or 'char', got {level!r}")
