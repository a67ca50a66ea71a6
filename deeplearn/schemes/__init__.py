"""Training schemes, by name: what `config.scheme` selects.

  supervised  a task's loss on dataset batches, one optimizer chain, any step
              form (deeplearn/schemes/supervised.py); the default
  word2vec    sparse SGD on a corpus kept on the device
              (deeplearn/schemes/word2vec.py)
  gan         a generator and a discriminator, two optimizers, alternating
              updates on dataset batches (deeplearn/schemes/gan.py)
  cascade     supervised training of a cascade's stages, whose exit thresholds
              are calibrated on a held-out split at each evaluation
              (deeplearn/schemes/cascade.py)

`config.scheme` may also be "package.module:Class", a scheme of your own
(deeplearn/schemes/base.py says what it supplies): it runs through the same
loop, with the same checkpoints, resume, signals and logging.
"""

import importlib

from deeplearn.config import did_you_mean
from deeplearn.schemes.cascade import Cascade
from deeplearn.schemes.gan import GAN
from deeplearn.schemes.supervised import Supervised
from deeplearn.schemes.word2vec import Word2Vec

SCHEMES = {"supervised": Supervised, "word2vec": Word2Vec, "gan": GAN, "cascade": Cascade}


def get_scheme(config, devices=None):
  """The scheme `config.scheme` names, built (and its config checked)."""
  name = config.scheme
  if ":" in name:
    module, _, attr = name.partition(":")
    try:
      cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
      raise ValueError(f"config.scheme={name!r}: {e}.") from e
  elif name in SCHEMES:
    cls = SCHEMES[name]
  else:
    raise ValueError(f"config.scheme={name!r}; {did_you_mean(name, SCHEMES)}use"
                     f" one of {sorted(SCHEMES)} or 'module:Class'.")
  return cls(config, devices)
