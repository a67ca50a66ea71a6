"""Orbax checkpoints of the whole run, verified on restore.

One checkpoint per saved step under WORKDIR/checkpoints/<step>/, which orbax
writes to `<step>.orbax-checkpoint-tmp` and renames when complete:

  state/      params, optimizer state, model state, PRNG key, step
  data/       the grain iterator's state, process_<i>-of-<n>.json
  config/     the run's config as JSON (when the Checkpointer has it): the
              reference a resumed run is checked against
  run/        what the loop carries across restarts (its timing totals)
  integrity/  checksums of all of the above, committed with them

Saving the iterator is what makes a resumed run see the same batches as an
uninterrupted one. orbax restores a flipped bit silently as a wrong number,
so every restore recomputes the checksums: `restore_latest` falls back to the
newest intact checkpoint, moves the damaged newer ones aside (the run will
write those steps again) and raises `CorruptCheckpointError` if none is
intact. A step whose arrays are whole but whose `state/_METADATA` (orbax's
record of the tree's structure) is gone is restored by the arrays' names
onto the run's own state structure, each array checked against its
checksum, and the missing file is named. Unfinished tmp folders of a killed
run are removed on start; a save that fails in the background raises
`CheckpointSaveError` at the next `save` or `wait`.
"""

import contextlib
import json
import os
import sys
import time
import zlib

from absl import logging
import grain
import jax
from jax import lax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

# Array checksum: the array's bits as uint32 words w[i] (8- and 16-bit
# values widened, 64-bit ones split in two, row-major), summed plainly and
# weighted by position, both mod 2**32 (Fletcher/Adler style). Text (config,
# iterator state) gets zlib's CRC-32 of its canonical JSON.
ALGORITHM = "u32 words: sum(w), sum(w*(i+1)) mod 2^32; crc32 of JSON"


class CorruptCheckpointError(RuntimeError):
  """Checkpoints exist but none of them restores intact."""

  def __init__(self, directory: str, problems: dict[int, list[str]]):
    self.problems = problems
    lines = [f"step {step}: {p}" for step, ps in problems.items() for p in ps]
    super().__init__(
        f"No intact checkpoint in {directory}; refusing to restore damaged"
        " numbers or to start afresh over them:\n  " + "\n  ".join(lines))


class CheckpointSaveError(RuntimeError):
  """A checkpoint failed to write (often in orbax's background thread)."""


def _words(x):
  """x's bits as uint32 words: one per 8/16/32-bit value, two per 64-bit."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  bits = x.dtype.itemsize * 8
  if bits < 32:
    return lax.bitcast_convert_type(x, jnp.dtype(f"uint{bits}")).astype(
        jnp.uint32)
  return lax.bitcast_convert_type(x, jnp.uint32)


def _sums(x):
  """[sum(w), sum(w * (i + 1))] mod 2**32 over x's words w, uint32 [2]."""
  w = _words(jnp.asarray(x))
  # The flat index from per-dimension iotas, not a reshaped arange: each
  # shard of a sharded array then computes its own indices, no resharding.
  position, stride = jnp.ones(w.shape, jnp.uint32), 1
  for dim in reversed(range(w.ndim)):
    position += (lax.broadcasted_iota(jnp.uint32, w.shape, dim)
                 * jnp.uint32(stride % 2**32))
    stride *= w.shape[dim]
  zero = jnp.uint32(0)
  # One variadic reduce, not two jnp.sum: on XLA:CPU (2 cores) 4 ms instead
  # of 80 ms for 100 MB of float32.
  total, weighted = lax.reduce(
      (w, w * position), (zero, zero),
      lambda a, b: (a[0] + b[0], a[1] + b[1]), tuple(range(w.ndim)))
  return jnp.stack([total, weighted])


@jax.jit
def _tree_sums(tree):
  """uint32 [num_leaves, 2]; integer sums are exact whatever the sharding."""
  return jnp.stack([_sums(x) for x in jax.tree.leaves(tree)])


def _leaf_names(tree) -> list[str]:
  return [jax.tree_util.keystr(path, simple=True, separator="/")
          for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def checksums(tree) -> dict[str, list[int]]:
  """{leaf path: [sum, weighted sum]}, e.g. 'params/Conv_0/kernel': [...].

  One jitted call and one fetch of a small vector; every process of a
  multi-process run gets the same numbers without gathering the arrays.
  """
  names = _leaf_names(tree)
  if not names:
    return {}
  sums = np.asarray(jax.device_get(_tree_sums(tree)))
  return {name: [int(a), int(b)] for name, (a, b) in zip(names, sums)}


def _crc(obj) -> int:
  return zlib.crc32(json.dumps(obj, sort_keys=True).encode())


def _iterator_state(data_iterator):
  """The iterator's state as grain writes it, parsed (dict or JSON bytes)."""
  state = data_iterator.get_state()
  return json.loads(state) if isinstance(state, bytes) else state


def _data_file() -> str:
  # grain's CheckpointHandler names each process's file this way.
  return f"process_{jax.process_index()}-of-{jax.process_count()}.json"


def _all_processes(values: list[int]) -> np.ndarray:
  """[process_count, len(values)]: every process's values, on every one."""
  values = np.asarray(values, np.uint32)
  if jax.process_count() == 1:
    return values[None]
  return np.asarray(multihost_utils.process_allgather(values))


def _describe(error: BaseException) -> str:
  # orbax wraps tensorstore's error, which names the array and the cause.
  while error.__cause__ is not None:
    error = error.__cause__
  text = " ".join(str(error).split())
  if len(text) > 500:  # orbax's errors end with the cause: keep both ends
    text = f"{text[:200]} ... {text[-300:]}"
  return f"{type(error).__name__}: {text}"


@contextlib.contextmanager
def _quiet_logs():
  """absl warnings off (orbax logs through absl) for the block."""
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(level)


def _key_name(key) -> str:
  """A tree path entry as orbax names it in a checkpoint's array paths."""
  for attribute in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey,
    if hasattr(key, attribute):              # GetAttrKey, SequenceKey
      return str(getattr(key, attribute))
  return str(key)


def _report(message: str) -> None:
  logging.warning("%s", message)
  print(f"checkpoint: {message}", file=sys.stderr, flush=True)


class Checkpointer:
  """Saves and restores (state, data iterator, config) with checksums.

  `read_only=True` is for readers beside a running job (evaluation): they
  must not delete its in-flight tmp folder nor move checkpoints aside.
  """

  def __init__(self, workdir: str, *, keep: int = 2,
               config_json: str | None = None, read_only: bool = False):
    """`keep`: the newest checkpoints kept, -1 = all (0 would delete them
    all, the final one included, and is refused)."""
    if keep == 0 or keep < -1:
      raise ValueError(f"keep={keep}: keep at least 1 checkpoint, or -1 for"
                       " all of them.")
    self.config_json = config_json
    self.read_only = read_only
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    # A reader's manager: orbax logs a warning for each writer's option it
    # overrides, and one that the folder is read-only, which the reader asked
    # for; the options are given as orbax sets them, the last one silenced.
    quiet = _quiet_logs() if read_only else contextlib.nullcontext()
    with quiet:
      self.manager = self._manager(keep, read_only)
    # orbax deletes the tmp folders in a background thread; wait for it, so
    # that none is left once the constructor returns.
    # pylint: disable-next=protected-access
    self.manager._maybe_await_cleanup_tmp_directory()
    self._saving = None  # the step of the save that may still be running

  def _manager(self, keep: int, read_only: bool):
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=None if keep == -1 or read_only else keep,
            save_interval_steps=0 if read_only else 1,
            create=not read_only, read_only=read_only,
            # Deletes <step>.orbax-checkpoint-tmp* folders left by a killed
            # run (on the primary process only).
            cleanup_tmp_directories=not read_only,
            # With the default asynchronous creation, a step folder that
            # cannot be created left orbax's writer threads waiting 300 s
            # for a signal; created here, the failure raises from save().
            async_options=ocp.AsyncOptions(
                create_directories_asynchronously=False)),
        item_names=("state", "data", "config", "run", "integrity"))

  def latest_step(self) -> int | None:
    """The newest complete step (orbax never lists tmp folders)."""
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator,
           run: dict | None = None) -> None:
    """Starts an asynchronous save; raises if the previous one failed.

    `run`: JSON the loop carries across restarts (`run_info` reads it).
    The checksums are computed and fetched here, before returning, since
    the caller donates `state` to the next train step.
    """
    if self.read_only:
      raise CheckpointSaveError(f"Checkpointer({self.directory!r}) is"
                                f" read-only; not saving step {step}.")
    sums = _tree_sums(state) if jax.tree.leaves(state) else None
    self._raise_if_save_failed()
    arrays = {}
    if sums is not None:
      for (name, x), (a, b) in zip(
          zip(_leaf_names(state), jax.tree.leaves(state)),
          np.asarray(jax.device_get(sums))):
        arrays[name] = {"dtype": str(jnp.result_type(x)),
                        "shape": list(np.shape(x)),
                        "checksum": [int(a), int(b)]}
    data_crcs = _all_processes([_crc(_iterator_state(data_iterator))])[:, 0]
    count = jax.process_count()
    record = {"algorithm": ALGORITHM, "arrays": arrays,
              "data": {f"process_{i}-of-{count}.json": int(crc)
                       for i, crc in enumerate(data_crcs)}}
    items = {"state": ocp.args.StandardSave(state),
             "data": grain.checkpoint.CheckpointSave(data_iterator)}
    if self.config_json is not None:
      config = json.loads(self.config_json)
      record["config"] = _crc(config)
      items["config"] = ocp.args.JsonSave(config)
    if run is not None:
      record["run"] = _crc(run)
      items["run"] = ocp.args.JsonSave(run)
    items["integrity"] = ocp.args.JsonSave(record)
    self._saving = step
    try:
      self.manager.save(step, args=ocp.args.Composite(**items))
    except Exception as e:
      self._saving = None
      raise CheckpointSaveError(
          f"The checkpoint at step {step} in {self.directory} failed:"
          f" {_describe(e)}") from e

  def _raise_if_save_failed(self) -> None:
    # orbax re-raises a background failure from wait_until_finished (also
    # called inside its save()), once; it only logs it otherwise.
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      step, self._saving = self._saving, None
      raise CheckpointSaveError(
          f"The checkpoint at step {step} in {self.directory} failed while"
          f" writing in the background: {_describe(e)}") from e
    self._saving = None

  def restore(self, step: int, abstract_state, data_iterator=None):
    """Restores `step` onto `abstract_state`'s shapes and shardings (any
    mesh), after checking it; raises CorruptCheckpointError if damaged, and
    ValueError listing the steps there are if there is none at `step`."""
    steps = self.manager.all_steps()
    if step not in steps:
      raise ValueError(f"No checkpoint at step {step} in {self.directory};"
                       f" available: {sorted(steps) or 'none'}.")
    state, problems = self._restore_checked(step, abstract_state,
                                            data_iterator)
    if problems:
      for problem in problems:
        _report(f"checkpoint at step {step} is damaged: {problem}")
      raise CorruptCheckpointError(self.directory, {step: problems})
    return state

  def restore_latest(self, abstract_state, data_iterator=None):
    """(state, step) of the newest intact checkpoint, or (None, None) if
    there is none at all; raises CorruptCheckpointError if none is intact."""
    damaged = {}
    for step in sorted(self.manager.all_steps(), reverse=True):
      state, problems = self._restore_checked(step, abstract_state,
                                              data_iterator)
      if not problems:
        if damaged:
          self._set_aside(damaged)
          _report(f"restored step {step} instead of the damaged"
                  f" step(s) {sorted(damaged)}")
        return state, step
      damaged[step] = problems
      for problem in problems:
        _report(f"checkpoint at step {step} is damaged: {problem};"
                " trying an older one")
    if damaged:
      raise CorruptCheckpointError(self.directory, damaged)
    return None, None

  def _restore_checked(self, step, abstract_state, data_iterator):
    """(state, problems); the iterator is restored only if all is well."""
    state, problems = None, []
    try:
      record = self.manager.restore(step, args=ocp.args.Composite(
          integrity=ocp.args.JsonRestore()))["integrity"]
      if record.get("algorithm") != ALGORITHM:
        raise ValueError("unknown checksum algorithm"
                         f" {record.get('algorithm')!r}")
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f"no readable integrity record ({_describe(e)})")
      return None, self._agree(problems)
    try:
      state = self._restore_state(step, abstract_state)
      problems += self._array_problems(record["arrays"], state)
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f"state unreadable ({_describe(e)})")
    for item in ("config", "run"):
      if item in record:
        _, problem = self._json_item(step, item, record)
        if problem:
          problems.append(problem)
    if data_iterator is not None:
      name = _data_file()
      try:
        with open(os.path.join(self.directory, str(step), "data", name)) as f:
          crc = _crc(json.loads(f.read()))
        if crc != record["data"].get(name):
          problems.append(f"data iterator state {name} differs from its"
                          " recorded checksum")
      except Exception as e:  # pylint: disable=broad-except
        problems.append(f"data iterator state unreadable ({_describe(e)})")
    problems = self._agree(problems)
    if not problems and data_iterator is not None:
      try:
        self.manager.restore(step, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(data_iterator)))
      except Exception as e:  # pylint: disable=broad-except
        problems.append(f"data iterator not restored ({_describe(e)})")
    return state, problems

  def _restore_state(self, step: int, abstract_state):
    """orbax's restore; by the arrays' names if state/_METADATA is gone.

    Without _METADATA orbax rebuilds the tree from the stored array paths as
    nested dicts, which do not match the run's state (dataclasses, optax's
    tuples): the arrays are then restored into dicts keyed as orbax names
    them and put back into the abstract state's own structure. The caller
    checks every array against its recorded checksum, so a misplaced array
    cannot pass."""
    metadata = os.path.join(self.directory, str(step), "state", "_METADATA")
    if os.path.exists(metadata):
      return self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))["state"]
    _report(f"checkpoint at step {step}: {metadata} is missing (orbax's"
            " record of the state's structure); restoring the arrays by name"
            " onto the run's own state structure, each checked against its"
            " checksum")
    paths, treedef = jax.tree_util.tree_flatten_with_path(abstract_state)
    by_name = {}
    for path, leaf in paths:
      node = by_name
      for key in path[:-1]:
        node = node.setdefault(_key_name(key), {})
      node[_key_name(path[-1])] = leaf
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(by_name)))["state"]
    leaves = []
    for path, _ in paths:
      node = restored
      for key in path:
        node = node[_key_name(key)]
      leaves.append(node)
    return jax.tree_util.tree_unflatten(treedef, leaves)

  def _json_item(self, step: int, item: str, record: dict):
    """(the JSON item, None) if it matches its checksum, else (None, why)."""
    try:
      value = self.manager.restore(step, args=ocp.args.Composite(
          **{item: ocp.args.JsonRestore()}))[item]
    except Exception as e:  # pylint: disable=broad-except
      return None, f"{item} unreadable ({_describe(e)})"
    if _crc(value) != record[item]:
      return None, f"{item}.json differs from its recorded checksum"
    return value, None

  def _record(self, step: int) -> dict | None:
    try:
      return self.manager.restore(step, args=ocp.args.Composite(
          integrity=ocp.args.JsonRestore()))["integrity"]
    except Exception:  # pylint: disable=broad-except
      return None

  def stored_config(self) -> tuple[int | None, dict | None]:
    """(step, config) of the newest checkpoint whose stored config is
    intact: the reference a resumed run is checked against (the workdir's
    config.json is a copy for people to read). (None, None) if no
    checkpoint stores one (none yet, or written before configs were)."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      record = self._record(step)
      if record and "config" in record:
        config, problem = self._json_item(step, "config", record)
        if problem is None:
          return step, config
    return None, None

  def run_info(self, step: int) -> dict:
    """The `run` JSON saved with `step` ({} if none: an older checkpoint)."""
    record = self._record(step)
    if not record or "run" not in record:
      return {}
    value, _ = self._json_item(step, "run", record)
    return value or {}

  @staticmethod
  def _array_problems(recorded: dict, state) -> list[str]:
    restored = dict(zip(_leaf_names(state), jax.tree.leaves(state)))
    actual = checksums(state)
    problems = []
    for name in sorted(recorded.keys() | restored.keys()):
      if name not in restored:
        problems.append(f"array {name} is recorded but was not restored")
      elif name not in recorded:
        problems.append(f"array {name} has no recorded checksum")
      elif recorded[name]["dtype"] != str(jnp.result_type(restored[name])):
        problems.append(f"array {name} was saved as {recorded[name]['dtype']}"
                        " but restored as"
                        f" {jnp.result_type(restored[name])}")
      elif recorded[name]["checksum"] != actual[name]:
        problems.append(f"array {name}: checksum mismatch (recorded"
                        f" {recorded[name]['checksum']}, read {actual[name]})")
    return problems

  @staticmethod
  def _agree(problems: list[str]) -> list[str]:
    # Every process must pick the same step, also when only one of them
    # found damage (its own data state). A read error that only some
    # processes hit inside orbax's restore would still desynchronize
    # orbax's own barriers: array checksums are global, read errors not.
    bad = _all_processes([len(problems)])[:, 0]
    others = [i for i in np.flatnonzero(bad) if i != jax.process_index()]
    return problems + [f"process {i} found damage (see its log)"
                       for i in others]

  def _set_aside(self, damaged: dict[int, list[str]]) -> None:
    """Renames damaged steps to <step>.damaged-<time>, out of orbax's view:
    kept for inspection, and the resumed run can write those steps again."""
    if self.read_only:
      return
    stamp = time.strftime("%Y%m%dT%H%M%S")
    if jax.process_index() == 0:
      for step in damaged:
        target = os.path.join(self.directory, f"{step}.damaged-{stamp}")
        os.rename(os.path.join(self.directory, str(step)), target)
        _report(f"moved the damaged step {step} to {target}")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("deeplearn_checkpoint_set_aside")
    self.manager.reload()

  def wait(self) -> None:
    """Blocks until the last save is written; raises if it failed."""
    self._raise_if_save_failed()

  def close(self) -> None:
    self._raise_if_save_failed()
    self.manager.close()
