"""The experiment config: defaults every experiment starts from, and checks.

An experiment file's `get_config(arg=None)` starts from `default_config()`,
sets its model, data, optimizer and mesh, and returns the ConfigDict; the
`--config` flag locks it, so a misspelled key or a wrong type from the command
line fails at once. `validate()` runs the checks that need the devices and
the dataset, still before anything is compiled.
"""

import importlib.util
import json
import os

import ml_collections
from ml_collections import config_dict

# Logical axis -> mesh axes. Only the batch is split until an experiment adds
# model-parallel rules; unnamed logical axes are replicated.
DATA_PARALLEL_RULES = (("batch", ("data", "fsdp")),)


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = ""  # "" = the dataset's own task (classification / language_model)

  c.model = ml_collections.ConfigDict({"name": ""})

  c.data = ml_collections.ConfigDict()
  c.data.dataset = ""
  c.data.data_dir = config_dict.placeholder(str)  # None: TFDS default
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.batch_size = 128  # global, over all processes and devices
  c.data.eval_batch_size = 1000
  c.data.pp_train = ""
  c.data.pp_eval = ""
  c.data.seq_len = 0  # language models: tokens per training example
  c.data.num_workers = 0
  c.data.prepare = True

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"  # sgd | adagrad | adam | adamw
  c.optimizer.learning_rate = 1e-3
  c.optimizer.momentum = 0.0  # sgd
  c.optimizer.nesterov = False  # sgd
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0  # decoupled (adamw)
  c.optimizer.l2 = 0.0  # coupled: l2 * w added to the gradient
  c.optimizer.grad_clip_norm = 0.0  # 0 = off
  c.optimizer.averaging = "none"  # none | ema | polyak: eval-only weights
  c.optimizer.ema_decay = 0.999

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = "constant"  # constant | exponential | cosine | step
  c.schedule.warmup_steps = 0
  c.schedule.decay_rate = 0.1  # exponential / step
  c.schedule.decay_steps = 0  # exponential / step; 0 = the whole run
  c.schedule.end_factor = 0.0  # cosine: final lr / peak lr

  c.mesh = ml_collections.ConfigDict({"data": -1})
  c.sharding = ml_collections.ConfigDict({"rules": DATA_PARALLEL_RULES})

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 0  # one of num_steps / num_epochs
  c.train.num_epochs = 0.0
  c.train.seed = 0
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 2
  c.train.progress = True

  c.eval = ml_collections.ConfigDict()
  c.eval.best_metric = ""  # "" = the task's default (accuracy, or loss)
  return c


def from_file(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/experiment.py[:variant]` as the --config flag does."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"Experiment file {path!r} not found.")
  module_spec = importlib.util.spec_from_file_location("experiment", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  config.lock()
  return config


def num_train_steps(config, num_train_examples: int) -> int:
  if config.train.num_steps and config.train.num_epochs:
    raise ValueError("Set only one of config.train.num_steps and"
                     " config.train.num_epochs.")
  if config.train.num_steps:
    return int(config.train.num_steps)
  if config.train.num_epochs:
    return int(config.train.num_epochs * num_train_examples
               // config.data.batch_size)
  raise ValueError("Set config.train.num_steps or config.train.num_epochs.")


def validate(config, *, num_batch_shards: int, process_count: int) -> None:
  """Checks that need the mesh; raises naming the key and the fix."""
  for key in ("batch_size", "eval_batch_size"):
    size = config.data[key]
    if size <= 0 or size % num_batch_shards:
      raise ValueError(
          f"config.data.{key}={size} must be a positive multiple of the"
          f" {num_batch_shards} batch shards of the mesh.")
    if size % process_count:
      raise ValueError(
          f"config.data.{key}={size} must divide over {process_count}"
          " processes.")
  for key in ("log_every", "eval_every", "checkpoint_every"):
    if config.train[key] <= 0:
      raise ValueError(f"config.train.{key}={config.train[key]} must be > 0.")
  if config.optimizer.averaging not in ("none", "ema", "polyak"):
    raise ValueError(
        f"config.optimizer.averaging={config.optimizer.averaging!r}: use"
        " 'none', 'ema' or 'polyak'.")


def to_json(config) -> str:
  return config.to_json(indent=2, sort_keys=True)


def _tuples(value):
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def from_json(text: str) -> ml_collections.ConfigDict:
  """Reads a stored config (JSON, never executed) back into a ConfigDict."""
  return ml_collections.ConfigDict(_tuples(json.loads(text)))
