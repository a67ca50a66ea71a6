"""The experiment config: defaults every experiment starts from, and checks.

An experiment file's `get_config(arg=None)` starts from `default_config()`,
sets its model, data, optimizer and mesh, and returns the ConfigDict; the
`--config` flag locks it, so a misspelled key or a wrong type from the command
line fails at once. `validate()` runs the checks that need the devices and
the dataset, still before anything is compiled.
"""

import difflib
import errno
import importlib.util
import json
import math
import os
import re
import sys
import tempfile

from absl import flags
import ml_collections
from ml_collections import config_dict, config_flags

# Logical axis -> mesh axes, MaxText/t5x style: an experiment picks a table and
# a mesh (`config.sharding.rules = MODEL_PARALLEL_RULES`, `config.mesh.model = 2`).
# Unnamed logical axes are replicated, and a mesh axis of size 1 splits nothing,
# so every table fits every mesh. Models name two kinds of axes: "narrow" ones
# that a layer reads whole (`embed`; `conv_in`, channels a channel split keeps
# whole) and "wide" ones that consecutive layers split and then reduce (`mlp`,
# `heads`, `conv_out`); a kernel never carries two of either kind.
# Only the batch split: synchronous data parallelism over data (and fsdp).
DATA_PARALLEL_RULES = (("batch", ("data", "fsdp")),)
# ZeRO-3 / FSDP: parameters and optimizer state split along their narrow axis
# over fsdp; jit all-gathers each layer's weights where it runs. Kernels with
# no narrow axis (a first conv, whose input is the image; a classifier after
# an odd number of hidden layers) stay replicated.
FSDP_RULES = DATA_PARALLEL_RULES + (("embed", "fsdp"), ("conv_in", "fsdp"))
# Megatron tensor parallelism and the convolutions' channel split: the wide
# axes over model (column then row splits). On a mesh data x model it is
# DistBelief's data x model parallelism.
MODEL_PARALLEL_RULES = DATA_PARALLEL_RULES + (
    ("mlp", "model"), ("heads", "model"), ("conv_out", "model"))
# Both: the batch rule first, so activations keep fsdp for the batch.
FSDP_MODEL_PARALLEL_RULES = FSDP_RULES + MODEL_PARALLEL_RULES[1:]
# Expert parallelism (GShard, Switch): the experts' weights split over
# expert, the tokens over data and expert. `expert` comes first: a tensor with
# an expert axis (the dispatched tokens) takes the mesh axis for it and falls
# back to the second batch rule, so entering and leaving the experts moves
# tokens between the two layouts, an all-to-all over expert each way.
EXPERT_PARALLEL_RULES = (("expert", "expert"),
                         ("batch", ("data", "fsdp", "expert")),
                         ("batch", ("data", "fsdp")))


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = ""  # "" = the dataset's own task (classification / language_model)
  # How the run learns (deeplearn/schemes/): "supervised" (model + task +
  # optimizer on dataset batches), "word2vec" (sparse SGD on a corpus), or
  # "module:Class" of your own; every scheme runs in the one loop.
  c.scheme = "supervised"
  c.loss = ml_collections.ConfigDict()
  # Training targets (1 - s) one-hot + s / classes (Szegedy et al. 2016);
  # evaluation keeps the plain cross-entropy.
  c.loss.label_smoothing = 0.0

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
  # Language models: tokens per training example; translation: per side.
  c.data.seq_len = 0
  c.data.vocab_size = 0  # translation: subword pieces, shared by both sides
  c.data.source_language = ""  # translation: "" = the pair's first ("de")
  c.data.tokenizer_examples = 100_000  # translation: pairs subwords learn on
  c.data.num_workers = 0
  # True: every epoch a new permutation of the training examples; False: the split's
  # own order, every epoch the same, batches taken in turn (reference code such as
  # MNIST-1D's PyTorch loop, whose split is already in random order).
  c.data.shuffle = True
  c.data.prepare = True
  # N > 0: a TFDS catalog dataset that is not prepared in data_dir is N random
  # examples a split from TFDS's mock generator, said at the start (the :tiny
  # variants, offline); 0: the real set, downloaded if need be.
  c.data.mock_examples = 0
  # Datasets TFDS prepares from files downloaded by hand (imagenet2012's
  # tars); None: <data_dir>/downloads/manual, TFDS's default.
  c.data.manual_dir = config_dict.placeholder(str)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"  # sgd | adagrad | adam | adamw | lars | lamb
  c.optimizer.learning_rate = 1e-3
  c.optimizer.momentum = 0.0  # sgd, lars
  c.optimizer.trust_coefficient = 0.001  # lars
  c.optimizer.nesterov = False  # sgd
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0  # built into adamw, lars, lamb
  c.optimizer.l2 = 0.0  # coupled: l2 * w added to the gradient
  # Which parameters weight_decay / l2 shrink: all | kernels (kernels and
  # embeddings, not biases or norm scales: GPT-2 / nanoGPT's split).
  c.optimizer.decay_mask = "all"
  c.optimizer.grad_clip_norm = 0.0  # 0 = off
  c.optimizer.averaging = "none"  # none | ema | polyak: eval-only weights
  c.optimizer.ema_decay = 0.999
  # Asynchronous SGD (parallel/async_sgd.py): gradients applied k steps late,
  # W_{t+1} = W_t - a g(W_{t-k}); for drawn delays, the largest.
  c.optimizer.staleness = 0
  # fixed | spread (replica r: r k / (N - 1) steps late) | uniform | geometric
  # (drawn per step and replica, at most k: stragglers).
  c.optimizer.staleness_dist = "fixed"
  c.optimizer.replicas = 1  # async workers: each batch / N delayed on its own

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = "constant"  # constant | exponential | cosine | step
  c.schedule.warmup_steps = 0
  c.schedule.decay_rate = 0.1  # exponential / step
  c.schedule.decay_steps = 0  # exponential / step; 0 = the whole run
  c.schedule.end_factor = 0.0  # cosine: final lr / peak lr

  c.mesh = ml_collections.ConfigDict({"data": -1})
  c.sharding = ml_collections.ConfigDict({"rules": DATA_PARALLEL_RULES})
  # The forms Conv / Dense compute in (deeplearn/models/layers.py): conv
  # auto | xla | im2col, dot auto | xla | 2d; "auto" by the backend (CPU: im2col
  # for unpadded convolutions, 2-D matmuls). $DEEPLEARN_CONV_IMPL and
  # $DEEPLEARN_DOT_IMPL, when set, override these.
  c.kernels = ml_collections.ConfigDict({"conv": "auto", "dot": "auto"})

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 0  # one of num_steps / num_epochs
  c.train.num_epochs = 0.0
  c.train.seed = 0
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 1000
  # The newest checkpoints kept; -1 keeps all (0, deleting every one, the
  # final one included, is refused).
  c.train.keep_checkpoints = 2
  c.train.progress = True
  c.train.grad_accum_steps = 1  # micro-batches per step (same global batch)
  # "jit": XLA inserts the gradient all-reduce; "shard_map": the towers and
  # their lax.pmean written out (deeplearn/parallel/data_parallel.py).
  c.train.step_form = "jit"
  # step_form "local_sgd" (parallel/local_sgd.py): one replica per batch
  # shard, H local steps between parameter averages (one all-reduce).
  c.train.local_steps = 1
  # local_sgd: average | nesterov (DiLoCo: the averaged change is the gradient
  # of SGD with Nesterov momentum 0.9 and outer_learning_rate).
  c.train.outer_optimizer = "average"
  c.train.outer_learning_rate = 0.7
  # step_form "pipeline" (parallel/pipeline.py): the layers cut into
  # config.mesh.stage stages, the batch into `microbatches` that flow through;
  # schedule "gpipe" (all forwards, then all backwards) or "1f1b" (one forward,
  # one backward: about p stored activations per stage instead of m).
  c.train.pipeline_schedule = "1f1b"
  c.train.microbatches = 4
  # A NaN / Inf in the loss, gradients or new parameters: "stop" (error naming
  # the step and the leaf; nothing non-finite is saved) or "skip" the update,
  # at most `max_nonfinite_skips` times in a row, then stop.
  c.train.nonfinite = "stop"
  c.train.max_nonfinite_skips = 3
  # jax's persistent compilation cache (every program, however quick to
  # compile): a second start loads the compiled steps; "" = off.
  c.train.compilation_cache_dir = "~/.cache/deeplearn/jax_cache"

  # Knowledge distillation (Hinton et al. 2015; deeplearn/tasks/distillation.py,
  # docs/distillation.md): a classifier student trained on
  # alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels). The
  # teacher is one of: a finished classifier run's workdir (restored read-only,
  # its forward pass inside the student's step), or a .npz of its logits over
  # config.data.train_split (`logits`, `labels`, as
  # schemes.supervised.export_logits writes it; checked against the split's
  # labels in order, looked up by each example's inputs). Both "" = off.
  c.distill = ml_collections.ConfigDict()
  c.distill.teacher_workdir = ""
  c.distill.teacher_logits = ""
  c.distill.temperature = 1.0  # T > 0: softmax(logits / T) on both sides
  c.distill.alpha = 0.5  # in [0, 1]: the soft term's weight
  # The paper's transfer-set experiment: examples of this class weigh nothing
  # in the student's loss (-1: none left out).
  c.distill.omit_class = -1

  c.eval = ml_collections.ConfigDict()
  c.eval.best_metric = ""  # "" = the task's default (accuracy, or loss)

  # Quantisation with qwix (deeplearn/quantization.py, docs/quantization.md).
  # mode: "none" | "qat" (train through fake quantisation) | "ptq" (train in
  # float; `deeplearn.evaluate --quantize config` applies these rules).
  # rules: (module-path regex, weight dtype int8 | int4, activation dtype
  # int8 | int4 | none[, calibration absmax | minmax | rms,S | fixed,A,B]),
  # first match wins; a regex that matches no module fails before compiling.
  c.quantization = ml_collections.ConfigDict()
  c.quantization.mode = "none"
  c.quantization.rules = ((".*", "int8", "int8"),)
  return c


def did_you_mean(name, choices) -> str:
  """`"did you mean 'adam'? "` for the choice closest to `name`, else "".

  The one spelling hint of every unknown-name error: models, fields,
  datasets, optimizers, schedules, tasks, preprocessing ops, mesh axes.
  """
  close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
  return f"did you mean {close[0]!r}? " if close else ""


def check_choice(key: str, value, choices, what: str = "") -> None:
  """Raises unless `value` is one of `choices`, e.g. "config.optimizer.name=
  'adma' is not an optimizer; did you mean 'adam'? use one of [...]." """
  if value not in choices:
    raise ValueError(f"{key}={value!r}{' is not ' + what if what else ''}; "
                     f"{did_you_mean(value, choices)}use one of {list(choices)}.")


def define_config_flag():
  """The --config flag of the entry points: an experiment file with an
  optional :variant, loaded locked (a misspelled override fails)."""
  holder = config_flags.DEFINE_config_file(
      "config", None, "Experiment file, optionally with :variant.",
      lock_config=True)
  flag = flags.FLAGS[holder.name]
  flag.parser = _CheckedExperiment(flag.parser, holder.name)
  return holder


class _CheckedExperiment(flags.ArgumentParser):
  """ml_collections' --config parser, then what it leaves to a log line or a
  traceback: get_config returning None, and an override of a key the
  experiment does not have (a bare `KeyError: 'foo'` from deep inside)."""

  def __init__(self, parser, name: str):
    self.parser, self.name = parser, name

  def parse(self, argument):
    config = self.parser.parse(argument)
    check_loaded(config, argument)
    for key in _overrides(self.name):
      check_override(config, key)
    return config

  def flag_type(self):
    return self.parser.flag_type()


def _overrides(name: str) -> list[str]:
  """The keys of `--name.key=value` on the command line, as ml_collections
  reads them (flag files expanded)."""
  argv = flags.FLAGS.read_flags_from_files(sys.argv, force_gnu=False)
  return [arg.split("=", 1)[0].split(".", 1)[1] for arg in argv
          if re.match(rf"-{{1,2}}(no)?{name}\.", arg)]


def check_loaded(config, spec: str) -> None:
  if config is None:
    raise ValueError(
        f"Experiment file {spec.partition(':')[0]!r}: get_config() returned"
        " None; it must return the ConfigDict it builds (`return config`).")


def check_override(config, key: str) -> None:
  """Raises unless `--config.<key>` names a key the experiment has, saying
  what exists: the command line changes keys, it cannot add them."""
  node, path = config, "config"
  for part in key.split("."):
    part = part.split("[")[0]  # `--config.model.hidden_sizes[0]`
    if not isinstance(node, ml_collections.ConfigDict):
      return  # inside a value: ml_collections checks the rest
    if part not in node:
      have = sorted(node.keys())
      if path == "config.mesh":
        raise ValueError(
            f"--config.{key}: config.mesh has no axis {part!r}; this"
            f" experiment's mesh has axes: {have}. The command line can only"
            " resize those; an experiment adds an axis in its get_config, e.g."
            " `config.mesh.model = 2` with a rules table that uses it"
            " (`config.sharding.rules = MODEL_PARALLEL_RULES`).")
      what = "section" if path == "config" else "key"
      raise ValueError(
          f"--config.{key}: {path} has no {what} {part!r}; "
          f"{did_you_mean(part, have)}it has {have}. The command line can"
          " only change keys the experiment's get_config sets.")
    node, path = node[part], f"{path}.{part}"


def from_file(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/experiment.py[:variant]` as the --config flag does."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"Experiment file {path!r} not found.")
  module_spec = importlib.util.spec_from_file_location("experiment", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  check_loaded(config, spec)
  config.lock()
  return config


def num_train_steps(config, num_train_examples: int) -> int:
  """The run's length in steps, from num_steps or num_epochs; at least 1."""
  _check_signs(config.train, "config.train", _LENGTH)
  steps, epochs = config.train.num_steps, config.train.num_epochs
  if steps and epochs:
    raise ValueError("Set only one of config.train.num_steps and"
                     " config.train.num_epochs.")
  if steps:
    return int(steps)
  if not epochs:
    raise ValueError("Set config.train.num_steps or config.train.num_epochs.")
  batch = config.data.batch_size
  num_steps = int(epochs * num_train_examples // batch)
  if num_steps < 1:
    raise ValueError(
        f"config.train.num_epochs={epochs} of {num_train_examples} examples"
        f" in batches of {batch} (config.data.batch_size) is 0 steps: set"
        f" num_epochs to at least {batch / num_train_examples:.3g} (one"
        " batch), or config.train.num_steps.")
  return num_steps


_LENGTH = {"num_steps": "a count of steps", "num_epochs": "a count of epochs"}


def _check_signs(section, prefix: str, keys: dict[str, str]) -> None:
  """Raises unless each of `keys` (key -> what it is) is >= 0."""
  for key, what in keys.items():
    if section[key] < 0:
      raise ValueError(f"{prefix}.{key}={section[key]} must be >= 0 ({what}).")


def validate_loop(config) -> None:
  """The settings every scheme's run shares (the loop's, the run's length,
  the seed) and finite numbers throughout; raises naming the key."""
  for key in ("log_every", "eval_every", "checkpoint_every"):
    if config.train[key] <= 0:
      raise ValueError(f"config.train.{key}={config.train[key]} must be > 0.")
  _check_signs(config.train, "config.train",
               {**_LENGTH, "seed": "a PRNG seed: jax's and grain's"})
  keep = config.train.keep_checkpoints
  if keep == 0 or keep < -1:
    raise ValueError(
        f"config.train.keep_checkpoints={keep}: keep at least 1 (the newest"
        " checkpoints; 0 would delete every one, the final one included);"
        " -1 keeps all.")
  if config.train.nonfinite not in ("stop", "skip"):
    raise ValueError(f"config.train.nonfinite={config.train.nonfinite!r}: use"
                     " 'stop' or 'skip'.")
  check_finite(config)


def check_finite(config, prefix: str = "config") -> None:
  """Raises on a NaN or infinite float anywhere in the config: no
  hyperparameter means anything there, and a NaN learning rate would
  otherwise surface only as step 1's non-finite loss."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      check_finite(value, f"{prefix}.{key}")
    elif isinstance(value, float) and not math.isfinite(value):
      raise ValueError(f"{prefix}.{key}={value} is not a finite number: set"
                       " a finite value.")


def config_warnings(config) -> list[str]:
  """Settings that run, but likely not as meant: one line each, for the
  scheme to print at the start."""
  lines = []
  lr = config.optimizer.learning_rate
  if lr < 0:
    lines.append(f"config.optimizer.learning_rate={lr} is negative: the"
                 " updates climb the loss (gradient ascent).")
  data_dir = config.data.get("data_dir")
  if (data_dir and config.data.get("prepare", True)
      and not os.path.isdir(os.path.expanduser(data_dir))):
    lines.append(f"config.data.data_dir={data_dir!r} does not exist: it will"
                 " be created and the dataset prepared there.")
  return lines


def validate(config, *, num_batch_shards: int, process_count: int) -> None:
  """A supervised run's checks that need the mesh (and the loop's,
  `validate_loop`); raises naming the key and the fix. The step forms'
  and asynchronous / local SGD's are beside them (deeplearn.parallel)."""
  validate_loop(config)
  for key in ("batch_size", "eval_batch_size"):
    size = config.data[key]
    if size <= 0:
      raise ValueError(
          f"config.data.{key}={size} must be positive: the global batch, e.g."
          f" {math.lcm(num_batch_shards, process_count)} (a multiple of the"
          f" {num_batch_shards} batch shards of the mesh).")
    if size % num_batch_shards:
      raise ValueError(
          f"config.data.{key}={size} must be a positive multiple of the"
          f" {num_batch_shards} batch shards of the mesh (each device takes"
          f" an equal part): use {multiples_near(size, num_batch_shards)},"
          " or split the batch over fewer devices (config.mesh,"
          " config.sharding.rules).")
    if size % process_count:
      raise ValueError(
          f"config.data.{key}={size} must divide over {process_count}"
          f" processes: use {multiples_near(size, process_count)}.")
  k = config.train.grad_accum_steps
  if k < 1 or config.data.batch_size % (k * num_batch_shards):
    raise ValueError(
        f"config.train.grad_accum_steps={k}: the global batch"
        f" (config.data.batch_size={config.data.batch_size}) must divide into"
        f" {k} micro-batches, each a multiple of the {num_batch_shards} batch"
        " shards.")
  if config.model.get("bn_axis_name") is not None:
    raise ValueError(
        f"config.model.bn_axis_name={config.model.bn_axis_name!r}: leave it"
        " unset. Under the jit step the batch statistics are already over the"
        " whole (sharded) batch, and a named axis does not exist there; the"
        " shard_map step (config.train.step_form='shard_map') sets it itself.")
  check_choice("config.optimizer.averaging", config.optimizer.averaging,
               ("none", "ema", "polyak"), "a weight averaging")


def multiples_near(size: int, factor: int) -> str:
  below = size // factor * factor
  return " or ".join(str(s) for s in (below, below + factor) if s > 0)


# A workdir's filesystem needs at least this much free at the start: the
# config, the metrics and a small model's first checkpoint (MNIST-1D's CNN
# with Adam: about 0.1 MB) fit well under it; with less the run would fail at
# its first write, or its first save. Bigger checkpoints are not known yet.
MIN_FREE_BYTES = 1 << 20
_PROBE_BYTES = 64 << 10  # written and synced: quotas statvfs does not show


def check_workdir(path: str) -> None:
  """Raises unless `path` is, or can be made, a writable directory on a
  filesystem with room (`MIN_FREE_BYTES`).

  Creates nothing, so a run that fails its checks leaves no workdir behind.
  It writes, syncs and at once drops an unnamed temporary file rather than
  asking os.access, which answers yes to root where a write would still
  fail; an empty file would not notice a full disk.
  """
  if not path:
    raise ValueError("--workdir is empty: name the run's directory.")
  path = os.path.abspath(path)
  existing = path
  while not os.path.lexists(existing):  # the deepest part that exists
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    what = "a broken link" if os.path.islink(existing) else "not a directory"
    raise ValueError(
        f"--workdir {path!r} cannot be created: {existing!r} is {what}."
        " Choose a --workdir that is, or is under, a directory.")
  refused = None  # the probe's error, when the disk or quota is full
  try:
    with tempfile.TemporaryFile(dir=existing) as probe:
      probe.write(bytes(_PROBE_BYTES))
      probe.flush()
      os.fsync(probe.fileno())
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise ValueError(
          f"--workdir {path!r} is not writable: writing in {existing!r} failed"
          f" ({e.strerror or e}). Choose a --workdir you can write to.") from e
    refused = e.strerror
  stat = os.statvfs(existing)
  free = stat.f_bavail * stat.f_frsize
  if refused or free < MIN_FREE_BYTES:
    raise ValueError(
        f"--workdir {path!r} is on a full filesystem: {free:,} bytes free in"
        f" {existing!r}{f' ({refused})' if refused else ''}, under the"
        f" {MIN_FREE_BYTES:,} a run needs to start (its config, metrics and"
        " checkpoints). Free some space, or choose a --workdir on another"
        " filesystem.")


# Keys a resumed run may change: they change neither the model nor the
# training data's order, so the resumed steps equal an uninterrupted run's.
# The mesh and sharding rules may change too: checkpoints restore onto any
# mesh, and a global batch holds the same examples on any number of devices.
RESUME_SAFE = (
    "train.num_steps", "train.num_epochs", "train.log_every",
    "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.progress", "train.nonfinite", "train.max_nonfinite_skips",
    "train.compilation_cache_dir", "train.stop_after_epochs",
    "data.data_dir", "data.manual_dir", "data.num_workers", "data.eval_batch_size",
    "data.eval_split", "data.prepare", "eval", "mesh", "sharding",
    # The same functions computed in other forms (like a new mesh: rounding).
    "kernels",
    # Progressive resizing (e.g. imagenet_resnet50's low_res phase, then full
    # size): new preprocessing of the same examples in the same order. The
    # resumed run then differs from an uninterrupted one by design; the
    # change is printed at the start like every other.
    "data.pp_train", "data.pp_eval")
# The run's length, which a schedule with decay_steps=0 decays over.
_RUN_LENGTH = ("train.num_steps", "train.num_epochs")
_ABSENT = object()  # a key on one side only


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = _tuples(value)  # JSON gives lists for tuples
  return flat


def _shown(value) -> str:
  return "<absent>" if value is _ABSENT else repr(value)


def resume_differences(stored, new) -> tuple[list[str], list[str]]:
  """(unsafe, safe) differences between a workdir's config and a new one.

  Each is `"config.optimizer.learning_rate: 0.01 -> 0.05"`, sorted by key; a
  key on one side only shows `<absent>` on the other. Unsafe ones change the
  model, the data or the optimisation: the run would not be the stored one
  continued. Keys not in RESUME_SAFE are unsafe, new ones included, except
  a key the stored config predates that the new one leaves at its default.
  """
  # Both sides as a stored config reads back (from_json): a default key an
  # experiment leaves out (a model section without `name`) is absent from
  # the new config but filled in on the stored one.
  defaults_tree = default_config().to_dict()
  old = _flatten(_defaults_under(defaults_tree, stored.to_dict()))
  cur = _flatten(_defaults_under(defaults_tree, new.to_dict()))
  defaults = _flatten(defaults_tree)
  schedule = cur.get("schedule.name", "constant")
  spans_run = schedule != "constant" and not cur.get("schedule.decay_steps")
  unsafe, safe = [], []
  for key in sorted(old.keys() | cur.keys()):
    before, after = old.get(key, _ABSENT), cur.get(key, _ABSENT)
    if before == after or (before is _ABSENT and key in defaults
                           and after == defaults[key]):
      continue
    line = f"config.{key}: {_shown(before)} -> {_shown(after)}"
    if key in _RUN_LENGTH and spans_run:
      unsafe.append(
          f"{line} (the {schedule} schedule decays over the whole run, as"
          " config.schedule.decay_steps=0: the learning rates would change)")
    elif any(key == s or key.startswith(s + ".") for s in RESUME_SAFE):
      safe.append(line)
    else:
      unsafe.append(line)
  return unsafe, safe


def check_resume(stored, new) -> list[str]:
  """Raises listing every unsafe difference; returns the safe ones."""
  unsafe, safe = resume_differences(stored, new)
  if unsafe:
    raise ValueError(
        "The config changes the model, the data or the optimisation of the"
        " run stored in this workdir:\n  " + "\n  ".join(unsafe) +
        "\nTo start a new run, use a new --workdir; to resume this one,"
        " restore the stored values (the workdir's config.json).")
  return safe


def to_json(config) -> str:
  return config.to_json(indent=2, sort_keys=True)


def _tuples(value):
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def from_json(text: str) -> ml_collections.ConfigDict:
  """Reads a stored config (JSON, never executed) back into a ConfigDict.

  Keys added to default_config() since the run was stored take their
  defaults, which is what that run used."""
  return ml_collections.ConfigDict(
      _defaults_under(default_config().to_dict(), _tuples(json.loads(text))))


def _defaults_under(defaults: dict, stored: dict) -> dict:
  merged = dict(defaults)
  for key, value in stored.items():
    if isinstance(value, dict) and isinstance(defaults.get(key), dict):
      merged[key] = _defaults_under(defaults[key], value)
    else:
      merged[key] = value
  return merged
