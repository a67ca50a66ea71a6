"""TFDS builders and their splits: the builder prepared once, a split's data source.

What the pipeline and every dataset kind's reader share. Datasets that TFDS prepares from
files downloaded by hand (imagenet2012) look for them in config.data.manual_dir, by default
<data_dir>/downloads/manual. A catalog dataset that is not prepared in data_dir is, with
config.data.mock_examples = N (the `:tiny` variants), N random examples a split drawn from
its features by TFDS's mock generator, so that those run offline; otherwise TFDS downloads
and prepares it, and without a network that fails at once, saying how to prepare it.
"""

import functools
import os
import socket
import zlib

import tensorflow_datasets as tfds
# Registers the wmt*_translate builders: tfds 4.9.10 finds the other catalog datasets by
# name, but not these.
import tensorflow_datasets.translate  # noqa: F401  pylint: disable=unused-import
from tensorflow_datasets.testing import mocking

from deeplearn.config import did_you_mean
from deeplearn.data.builders import BUILDERS


# Where TFDS's catalog datasets come from first (its mirror): reachable or not tells, in
# milliseconds, whether a download can work, rather than minutes of retries.
PROBE_HOST = ("storage.googleapis.com", 443)
# tfds.testing.mock_data (tests) replaces it with a no-op: then nothing is downloaded.
_DOWNLOAD_AND_PREPARE = vars(tfds.core.DatasetBuilder)["download_and_prepare"]
_MOCKED = {}  # builder -> random examples a split stand in for it (mock_examples)


def open_builder(data_cfg):
  """config.data's dataset, prepared (prepared_builder)."""
  return prepared_builder(data_cfg.dataset, data_cfg.get("data_dir"),
                          data_cfg.get("prepare", True), data_cfg.get("manual_dir"),
                          data_cfg.get("mock_examples", 0))


@functools.lru_cache(maxsize=None)
def prepared_builder(name, data_dir, prepare, manual_dir=None, mock_examples=0):
  """The prepared builder: ours for the offline datasets, otherwise the TFDS catalog's
  (mock_examples random ones a split where it is not prepared and mock_examples > 0)."""
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
  if not builder.is_prepared() and mock_examples > 0 and name not in BUILDERS:
    _MOCKED[builder] = mock_examples
    print(f"{name} is not prepared in {builder.data_dir}: using {mock_examples} random "
          "examples a split instead (TFDS mock data; config.data.mock_examples=0 prepares "
          "the real set)", flush=True)
    return builder
  if not builder.is_prepared():
    if not prepare:
      raise ValueError(f"config.data.prepare=False, but {name} is not prepared in "
                       f"{builder.data_dir}")
    if (name not in BUILDERS and not getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
        and vars(tfds.core.DatasetBuilder)["download_and_prepare"] is _DOWNLOAD_AND_PREPARE):
      _check_network(name, builder.data_dir)
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


def _check_network(name, data_dir):
  """Fails at once, in one line, where TFDS would retry a download for minutes."""
  if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
    return  # downloads go through the proxy: no direct connection to test
  try:
    socket.create_connection(PROBE_HOST, timeout=10).close()
  except OSError as e:
    raise ValueError(
        f"config.data.dataset={name!r} is not prepared in {data_dir} and there is no network "
        f"to download it ({PROBE_HOST[0]}: {e}): run the same command once where there is, "
        "with --config.data.data_dir=DIR, and copy DIR here as config.data.data_dir (or use "
        "the experiment's :tiny variant, which runs on mock data)") from None


def mocked(builder) -> bool:
  """Whether random examples stand in for the builder's dataset (mock_examples)."""
  return builder in _MOCKED


def checked_source(builder, split, key):
  """data_source, or a ValueError naming the config key `split` came from and the splits."""
  try:
    return data_source(builder, split)
  except ValueError as e:
    base = split.split("[")[0]  # "train[:80%]" -> "train"
    raise ValueError(f"{key}={split!r}: {did_you_mean(base, builder.info.splits)}{e}") from e


@functools.lru_cache(maxsize=None)
def data_source(builder, split):
  """The split's random-access data source (decodes an example when it is indexed)."""
  if builder not in _MOCKED:
    return builder.as_data_source(split=split)
  try:  # tfds.testing.mock_data, in tests, answers for a builder that is not prepared
    return builder.as_data_source(split=split)
  except KeyError:  # "splits is empty": not prepared, not mocked by TFDS
    return MockSource(builder.info.features, _MOCKED[builder], split)


class MockSource:
  """`num_examples` random examples of `features`, different for each split: TFDS's mock
  generator (tfds.testing.mock_data's), read like as_data_source's splits."""

  def __init__(self, features, num_examples, split):
    self.generator = mocking.RandomFakeGenerator(
        features, num_examples, seed=zlib.crc32(split.encode()) % 2**30)
    self.num_examples = num_examples

  def __len__(self):
    return self.num_examples

  def __getitem__(self, i):
    if not 0 <= i < self.num_examples:
      raise IndexError(i)
    return self.generator[int(i)]

  def __getitems__(self, idx):
    return [self[int(i)] for i in idx]


def encoded_bytes(builder, split):
  """The split's size on disk, 0 where TFDS does not know it."""
  try:
    return builder.info.splits[split].num_bytes
  except (KeyError, ValueError):  # e.g. under tfds.testing.mock_data: no split metadata
    return 0


def fixed_size(builder):
  """Whether every example's inputs have one shape (not so for ImageNet's images)."""
  features = builder.info.features
  name = next((n for n in ("image", "inputs") if n in features), None)
  return name is None or None not in features[name].shape


def as_text(value):
  """A text feature's value as str (data sources give bytes)."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
