"""Supervised learning: one model, one optimizer chain, batches from a dataset.

The first scheme of the loop and the one most experiments use: a task
(deeplearn.tasks) turns a batch into a loss, the configured step form
(deeplearn.parallel.forms: jit, shard_map towers, local SGD, pipeline)
computes and applies the gradients, and a grain iterator over the TFDS
split supplies the batches and checkpoints its position.
"""

import jax
import numpy as np

from deeplearn import config as config_lib, data, models, step as step_lib, tasks
from deeplearn.models import layers, registry
from deeplearn.parallel import forms, mesh as mesh_lib, sharding
from deeplearn.schemes.base import Scheme


def build(config, devices=None) -> step_lib.Run:
  """Resolves and checks the config against the devices and the dataset:
  every check of every feature, before anything compiles."""
  mesh = mesh_lib.make_mesh(config.mesh.to_dict(), devices)
  rules = sharding.rules_from_config(config.sharding)
  sharding.check_rules(rules, mesh)
  config_lib.validate(
      config, num_batch_shards=sharding.num_batch_shards(rules, mesh),
      process_count=jax.process_count())
  forms.check(config, mesh, rules)
  layers.check_kernels(config.get("kernels"))
  registry.check_values(config.model)
  if jax.process_index() == 0:
    for line in config_lib.config_warnings(config):
      print(f"warning: {line}", flush=True)
  info = data.get_info(config.data)
  for key, value in (("num_classes", info.num_classes),
                     ("vocab_size", info.vocab_size)):
    if value and key in config.model and config.model[key] != value:
      raise ValueError(f"config.model.{key}={config.model[key]}, but"
                       f" {info.name} has {value}.")
  split, batch = config.data.train_split, config.data.batch_size
  if batch > info.num_examples.get(split, batch):
    raise ValueError(
        f"config.data.batch_size={batch} is larger than {info.name}'s"
        f" {split!r} split ({info.num_examples[split]} examples): every step"
        " would repeat examples. Use a batch of at most"
        f" {info.num_examples[split]}.")
  model = models.get_model(config.model)
  task = tasks.get_task(config.task or info.task, model, info,
                        config.loss.label_smoothing, config.loss)
  if hasattr(task, "check_data"):  # data a task cannot model fails here, named
    check_data(task, config.data)
  return step_lib.make_run(config, mesh, rules, info, task)


def check_data(task, data_cfg) -> None:
  """Shows the task the first train and eval batch, as pp_train / pp_eval leave them."""
  train = data.train_dataset(data_cfg, seed=0, process_index=0, process_count=1)
  task.check_data(next(iter(train)), f"config.data.pp_train={data_cfg.pp_train!r}")
  evals = data.eval_dataset(data_cfg, process_index=0, process_count=1)
  task.check_data(next(iter(evals)), f"config.data.pp_eval={data_cfg.pp_eval!r}")


def device_batch(local_batch, batch_sharding):
  """The step's batch: global arrays, or for one process the numpy arrays.

  A jitted step copies numpy inputs to its in_shardings itself, in C++: about
  10 us for an MNIST-1D batch, against 150-200 us for the global arrays built
  in Python (`sharding.global_batch`), which several processes need.
  """
  if jax.process_count() == 1:
    return local_batch
  return sharding.global_batch(local_batch, batch_sharding)


class Supervised(Scheme):
  """config.scheme = "supervised" (the default)."""

  def __init__(self, config, devices=None):
    self.run = run = build(config, devices)
    self.config, self.mesh, self.num_steps = config, run.mesh, run.num_steps
    self.best_metric = run.task.best_metric
    self.examples_per_step = config.data.batch_size
    self.train_step = forms.make_train_step(run)
    self._eval_step = step_lib.make_eval_step(run)
    self._eval_ds = data.eval_dataset(config.data,
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count())
    self._picture_batch = None  # images(): the eval examples pictured

  def init_state(self):
    return self.run.init_fn(self.config.train.seed)

  def abstract_state(self):
    return step_lib.abstract_state(self.run)

  def inputs(self):
    return iter(data.train_dataset(self.config.data, seed=self.config.train.seed,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count()))

  def next_input(self, iterator):
    return device_batch(next(iterator), self.run.batch_sharding)

  def nonfinite_leaf_names(self) -> list[str]:
    return step_lib.nonfinite_leaf_names(self.run)

  def evaluate(self, state) -> dict[str, float]:
    return step_lib.evaluate(self.run, self._eval_step, state, self._eval_ds)

  def images(self, state) -> dict:
    """The task's pictures (tasks with `images`: reconstructions, samples) of
    one fixed batch of eval examples, taken at the first call; else {}."""
    if not hasattr(self.run.task, "images"):
      return {}
    if self._picture_batch is None:
      batch = next(iter(self._eval_ds))
      real = np.asarray(batch["mask"]) > 0
      self._picture_batch = {k: np.asarray(v)[real] for k, v in batch.items()}
    params = state.params if state.avg_params is None else state.avg_params
    return self.run.task.images(params, state.model_state, self._picture_batch)

  def describe(self, state) -> str:
    return (f"{step_lib.describe(self.run)} |"
            f" {step_lib.num_params(state.params):,} params |"
            f" {layers.describe_kernels(self.config.get('kernels'))}")

  def finish(self, state, workdir: str, summary: dict) -> dict:
    del workdir, summary
    return {"num_params": step_lib.num_params(state.params)}
