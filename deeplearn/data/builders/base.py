"""Base class of the offline TFDS builders that ship with deeplearn."""

import inspect

from etils import epath
import tensorflow_datasets as tfds


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A GeneratorBasedBuilder that writes array_record and stays out of the TFDS registry.

  Unregistered, so our `tiny_shakespeare` and the catalog's never collide: the config name is
  resolved by `deeplearn.data.builders.BUILDERS`, and each builder's TFDS name (its on-disk
  folder) differs from every catalog name.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds 4.9.10 finds a builder's folder through `importlib_resources`, a package it only
    # installs for Python < 3.9; the module's own file is the same answer without it.
    return epath.Path(inspect.getfile(cls))
