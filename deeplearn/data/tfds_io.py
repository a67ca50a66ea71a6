"""TFDS builders and their splits: the builder prepared once, a split's data source.

What the pipeline and every dataset kind's reader share. Datasets that TFDS prepares from
files downloaded by hand (imagenet2012) look for them in config.data.manual_dir, by default
<data_dir>/downloads/manual.
"""

import functools

import tensorflow_datasets as tfds
# Registers the wmt*_translate builders: tfds 4.9.10 finds the other catalog datasets by
# name, but not these.
import tensorflow_datasets.translate  # noqa: F401  pylint: disable=unused-import

from deeplearn.config import did_you_mean
from deeplearn.data.builders import BUILDERS


def open_builder(data_cfg):
  """config.data's dataset, prepared (prepared_builder)."""
  return prepared_builder(data_cfg.dataset, data_cfg.get("data_dir"),
                          data_cfg.get("prepare", True), data_cfg.get("manual_dir"))


@functools.lru_cache(maxsize=None)
def prepared_builder(name, data_dir, prepare, manual_dir=None):
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
  return builder.as_data_source(split=split)


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
