"""Supervised learning: one model, one optimizer chain, batches from a dataset.

The first scheme of the loop and the one most experiments use: a task
(deeplearn.tasks) turns a batch into a loss, the configured step form
(deeplearn.parallel.forms: jit, shard_map towers, local SGD, pipeline)
computes and applies the gradients, and a grain iterator over the TFDS
split supplies the batches and checkpoints its position.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

from deeplearn import (checkpoint, config as config_lib, data, models, quantization,
                       step as step_lib, tasks)
from deeplearn.models import layers, registry
from deeplearn.parallel import forms, mesh as mesh_lib, sharding
from deeplearn.schemes.base import Scheme
from deeplearn.tasks import distillation


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
  model = quantization.training_model(config.quantization,  # qat: qwix-wrapped
                                      models.get_model(config.model))
  task = tasks.get_task(config.task or info.task, model, info,
                        config.loss.label_smoothing, config.loss)
  quantization.check(config.quantization, task, config.get("kernels"))
  task = _distilled(config, task, info, devices)  # config.distill: a teacher
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
    state = self.run.init_fn(self.config.train.seed)
    if hasattr(self.run.task, "initial_model_state"):  # restored parts: a teacher
      state = state.replace(model_state=jax.device_put(
          self.run.task.initial_model_state(state.model_state),
          self.run.state_shardings.model_state))
    return state

  def abstract_state(self):
    return step_lib.abstract_state(self.run)

  def inputs(self):
    return iter(data.train_dataset(self.config.data, seed=self.config.train.seed,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count()))

  def next_input(self, iterator):
    batch = next(iterator)
    if hasattr(self.run.task, "prepare_batch"):  # host-side additions to a batch
      batch = self.run.task.prepare_batch(batch)
    return device_batch(batch, self.run.batch_sharding)

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


@dataclasses.dataclass(frozen=True)
class Finished:
  """A finished supervised run, restored read-only (`load_finished`)."""
  config: Any  # the config its checkpoint stores
  run: step_lib.Run  # built from that config: task, model, mesh, info
  state: step_lib.TrainState
  step: int

  @property
  def params(self):
    """The weights it evaluates with: the averaged ones if it kept them."""
    s = self.state
    return s.params if s.avg_params is None else s.avg_params

  @property
  def model_state(self) -> dict:
    """Its own collections (batch_stats), without a teacher of its own."""
    return {k: v for k, v in self.state.model_state.items()
            if k != distillation.TEACHER}

  @property
  def variables(self) -> dict:
    """What `run.task.model.apply` takes."""
    return {"params": self.params, **self.model_state}


def load_finished(workdir: str, devices=None, *, key: str = "--workdir",
                  step: int | None = None,
                  eval_split: str | None = None) -> Finished:
  """A finished run in `workdir`, read-only: a distillation's teacher, a
  GAN's judge, deeplearn.evaluate's checkpoint.

  The config is the one its newest intact checkpoint stores, the reference a
  resumed run is checked against (config.json, a copy for people to read,
  only for checkpoints written before configs were stored); `eval_split`
  replaces its eval split. The state is `step`, or the newest intact
  checkpoint, restored onto the devices present with the checkpoints'
  integrity checks. Raises ValueError naming `key` if there is no run there.
  """
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    raise ValueError(f"{key}={workdir!r} has no checkpoints: name the workdir of"
                     " a finished deeplearn.train run.")
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  try:
    _, stored = ckpt.stored_config()
    path = os.path.join(workdir, "config.json")
    if stored is None and not os.path.exists(path):
      raise ValueError(f"{key}={workdir!r} has no stored config (checkpoint or"
                       " config.json): is it a deeplearn.train run?")
    if stored is None:
      with open(path) as f:
        config = config_lib.from_json(f.read())
    else:
      config = config_lib.from_json(json.dumps(stored))
    if eval_split:
      config.data.eval_split = eval_split
    run = build(config, devices)
    abstract = step_lib.abstract_state(run)
    if step is None:
      state, step = ckpt.restore_latest(abstract)
      if state is None:
        raise ValueError(f"{key}={workdir!r} has no checkpoint.")
    else:
      state = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return Finished(config=config, run=run, state=state, step=step)


def export_logits(workdir: str, out: str, split: str | None = None,
                  devices=None) -> str:
  """Writes a finished classifier run's logits over `split` (default: its
  train split), in the split's order, with the labels, to the .npz `out`:
  a teacher for config.distill.teacher_logits. Returns `out`."""
  teacher = load_finished(workdir, devices, key="export_logits(workdir)")
  logits, labels = split_logits(teacher, split or teacher.config.data.train_split)
  np.savez_compressed(out, logits=logits, labels=labels)
  return out


def split_logits(finished: Finished, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(logits float32 [N, classes], labels int32 [N]) of a finished classifier
  over `split`, in the split's order, its pp_eval applied; one process."""
  apply = jax.jit(lambda v, x: finished.run.task.model.apply(v, x, train=False))
  logits, labels = [], []
  for b in data.eval_dataset(finished.config.data, split=split, process_index=0,
                             process_count=1):
    real = np.asarray(b["mask"]) > 0
    logits.append(np.asarray(apply(finished.variables, b["inputs"]))[real])
    labels.append(np.asarray(b["label"])[real])
  return (np.concatenate(logits).astype(np.float32),
          np.concatenate(labels).astype(np.int32))


def _distilled(config, task, info, devices):
  """`task` taught by config.distill's teacher (tasks/distillation.py), or
  `task` itself when no teacher is named; every check before compiling."""
  d = config.get("distill")
  if d is None or not (d.teacher_workdir or d.teacher_logits):
    return task
  if d.teacher_workdir and d.teacher_logits:
    raise ValueError(
        f"config.distill.teacher_workdir={d.teacher_workdir!r} and"
        f" config.distill.teacher_logits={d.teacher_logits!r}: name one teacher.")
  if not d.temperature > 0:
    raise ValueError(f"config.distill.temperature={d.temperature} must be > 0"
                     " (the paper uses 1 to 20).")
  if not 0.0 <= d.alpha <= 1.0:
    raise ValueError(f"config.distill.alpha={d.alpha} must be in [0, 1]: the"
                     " soft term's weight (1 - alpha on the labels).")
  if type(task) is not tasks.Classification:  # pylint: disable=unidiomatic-typecheck
    raise ValueError(f"config.distill: distillation teaches classifiers; the"
                     f" task here is {type(task).__name__} (config.task="
                     f"{config.task!r}, dataset {info.name!r}).")
  if not -1 <= d.omit_class < info.num_classes:
    raise ValueError(f"config.distill.omit_class={d.omit_class}: a class of"
                     f" {info.name} (0 to {info.num_classes - 1}), or -1 for none.")
  fields = dict(temperature=float(d.temperature), alpha=float(d.alpha),
                omit_class=int(d.omit_class))
  if d.teacher_logits:
    key = "config.distill.teacher_logits"
    path = os.path.expanduser(d.teacher_logits)
    if not os.path.isfile(path):
      raise ValueError(f"{key}={d.teacher_logits!r} is not a file.")
    # The train split in order, as training batches carry it (pp_train).
    read = config.data.copy_and_resolve_references()
    read.unlock()
    read.pp_eval = config.data.pp_train
    try:
      batches = data.eval_dataset(read, split=config.data.train_split,
                                  process_index=0, process_count=1)
    except ValueError as e:
      raise ValueError(f"{key}: precomputed logits need the same training"
                       f" inputs every epoch, but config.data.pp_train="
                       f"{config.data.pp_train!r}: {e}") from e
    table = distillation.read_logits(path, batches, info.num_classes, key)
    return distillation.Distillation(task.model, info, task.label_smoothing,
                                     logits=table, **fields)
  key = "config.distill.teacher_workdir"
  teacher = load_finished(os.path.expanduser(d.teacher_workdir), devices, key=key)
  theirs = teacher.run.info
  if theirs.num_classes != info.num_classes:
    raise ValueError(f"{key}={d.teacher_workdir!r} classifies"
                     f" {theirs.num_classes} classes, the student"
                     f" {info.num_classes} ({info.name}).")
  if tuple(theirs.input_shape) != tuple(info.input_shape):
    raise ValueError(f"{key}={d.teacher_workdir!r} reads inputs of shape"
                     f" {tuple(theirs.input_shape)}, the student"
                     f" {tuple(info.input_shape)}.")
  if teacher.config.data.pp_eval != config.data.pp_eval:
    raise ValueError(
        f"{key}={d.teacher_workdir!r} reads its inputs with pp_eval="
        f"{teacher.config.data.pp_eval!r}, the student with"
        f" config.data.pp_eval={config.data.pp_eval!r}: the teacher must see"
        " the student's inputs as it was trained to.")
  # Their shapes boxed with the teacher's own logical axis names: the
  # student's state shardings lay them out on the student's mesh.
  values = teacher.variables
  boxes = jax.eval_shape(teacher.run.task.init_variables, jax.random.PRNGKey(0))
  return distillation.Distillation(
      task.model, info, task.label_smoothing, teacher_model=teacher.run.task.model,
      teacher_variables=values,
      teacher_boxes={k: v for k, v in dict(boxes).items() if k in values}, **fields)
