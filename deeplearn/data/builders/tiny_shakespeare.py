"""Tiny Shakespeare, character level (Karpathy's char-rnn corpus, "The Unreasonable Effectiveness
of Recurrent Neural Networks", 2015), built offline from a copy shipped in this package.

Splits follow char-rnn and the TFDS catalog's `tiny_shakespeare`: the first 90% of the text for
train, the next 5% for validation, the last 5% for test (1,003,854 / 55,770 / 55,770 chars),
one example per split. The vocabulary, every distinct char of the whole text sorted (65), is
stored in the builder's metadata as `vocab`: token id = index in that string.
"""

import gzip
import hashlib

from etils import epath
import tensorflow_datasets as tfds

from deeplearn.data.builders.base import LocalBuilder

TEXT_PATH = epath.Path(__file__).parent / "tinyshakespeare.txt.gz"
# SHA-256 of the uncompressed text, karpathy/char-rnn data/tinyshakespeare/input.txt.
TEXT_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def read_text(path=TEXT_PATH) -> str:
  """The corpus from `path` (gzipped), refused unless it matches TEXT_SHA256."""
  data = gzip.decompress(epath.Path(path).read_bytes())
  digest = hashlib.sha256(data).hexdigest()
  if digest != TEXT_SHA256:
    raise ValueError(
        f"{path} is not the tiny shakespeare corpus: its SHA-256 is {digest}, expected "
        f"{TEXT_SHA256}. Restore the file from the deeplearn repository.")
  return data.decode("utf-8")


def split_text(text: str) -> dict[str, str]:
  """The 90/5/5 split, cut where char-rnn and the TFDS catalog cut it."""
  i = int(len(text) * 0.9)
  j = i + int((len(text) - i) * 0.5)
  return {"train": text[:i], "validation": text[i:j], "test": text[j:]}


class TinyShakespeareLocal(LocalBuilder, skip_registration=True):
  """Tiny Shakespeare: one `text` example per split; `metadata["vocab"]` holds the 65 chars."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/karpathy/char-rnn",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # shipped with deeplearn
    text = read_text(self.TEXT_PATH)
    self.info.metadata["vocab"] = "".join(sorted(set(text)))
    return {name: self._generate_examples(name, part)
            for name, part in split_text(text).items()}

  def _generate_examples(self, name, text):
    yield name, {"text": text}

  TEXT_PATH = TEXT_PATH  # a class attribute, so a test can point one builder at a corrupted copy
