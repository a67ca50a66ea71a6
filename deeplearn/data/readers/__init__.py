"""Dataset kinds: how a builder's splits become tables, chosen once from its features.

One module per kind, each building its tables and its part of the DatasetInfo:
`classification` ((image or inputs, label): TFDS image sets, mnist1d, digits),
`language_model` (text windows: tiny_shakespeare), `pairs` (source/target chars: dates) and
`translation` (language pairs as subwords: WMT).
"""

from deeplearn.data.readers.base import Columns, Reader, Table
from deeplearn.data.readers.classification import Classification, Records
from deeplearn.data.readers.language_model import LanguageModel
from deeplearn.data.readers.pairs import Pairs
from deeplearn.data.readers.translation import Translation, TranslationConfig, is_translation

__all__ = ["Columns", "Reader", "Records", "Table", "TranslationConfig", "reader"]


def reader(builder, seq_len, translation: TranslationConfig | None,
           in_memory_bytes: int) -> Reader:
  """The builder's reader, by its features; a ValueError for features deeplearn cannot read.

  `seq_len`: tokens per example (language models, translation); `translation`: how a
  translation dataset becomes token ids; `in_memory_bytes`: the largest encoded split a
  classification dataset decodes into memory. Each kind ignores the others.
  """
  features = builder.info.features
  if is_translation(builder):
    return Translation(builder, seq_len, translation)
  if "text" in features:
    return LanguageModel(builder, seq_len)
  if "source" in features and "target" in features:
    return Pairs(builder)
  if "image" in features or "inputs" in features:  # unlabelled: the generative tasks
    return Classification(builder, in_memory_bytes)
  raise ValueError(f"{builder.name} has features {list(features)}: deeplearn reads "
                   "(image or inputs[, label]) for classification and the generative tasks, text "
                   "for language models, or "
                   "(source, target) for sequence to sequence")
