"""Checkpoint integrity: checksums, verified restore and fallback, a save
killed half-way, a save that fails in the background."""

import glob
import json
import os
import contextlib
import resource
import shutil
import signal
import subprocess
import sys
import textwrap

import grain
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest

from deeplearn import checkpoint, data, step as step_lib, train
from deeplearn.schemes import supervised
from test_train import tiny_config


def names_of(tree):
  return [jax.tree_util.keystr(path, simple=True, separator="/")
          for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def reference_checksum(x: np.ndarray) -> list[int]:
  """The definition, in numpy: uint32 words, plain and weighted sums."""
  x = np.asarray(x)
  if x.dtype.itemsize < 4:
    w = x.view(f"uint{x.dtype.itemsize * 8}").astype(np.uint64)
  else:
    w = x.view(np.uint32).astype(np.uint64)
  w = w.ravel()
  i = np.arange(1, w.size + 1, dtype=np.uint64)
  return [int(w.sum() % 2**32), int((w * i % 2**32).sum() % 2**32)]


def every_dtype():
  rng = np.random.RandomState(0)
  return {
      "f32": rng.randn(3, 5).astype(np.float32),
      "bf16": rng.randn(7).astype(ml_dtypes.bfloat16),
      "f16": rng.randn(2, 3).astype(np.float16),
      "i32": rng.randint(-9, 9, (4,)).astype(np.int32),
      "i8": rng.randint(-9, 9, (5,)).astype(np.int8),
      "bool": rng.rand(6) > 0.5,
      "rng": np.asarray(jax.random.PRNGKey(3)),  # uint32 [2]
      "step": np.int32(7),  # scalar
  }


def test_checksum_follows_its_definition_for_every_dtype():
  tree = every_dtype()
  sums = checkpoint.checksums(jax.tree.map(jnp.asarray, tree))
  assert sums == {name: reference_checksum(x)
                  for name, x in zip(names_of(tree), jax.tree.leaves(tree))}
  assert checkpoint.checksums(jax.tree.map(jnp.array, tree)) == sums
  typed = jax.random.key(3)  # new-style key: checksummed via its key data
  assert (checkpoint.checksums({"k": typed})["k"]
          == sums["rng"] == reference_checksum(jax.random.key_data(typed)))


def test_any_single_flipped_byte_or_swap_changes_the_checksum():
  for name, x in every_dtype().items():
    if name == "bool":
      continue  # a flipped bit of True (1) may still read as True
    x = np.asarray(x)
    original = checkpoint.checksums(x)[""]
    raw = x.tobytes()
    for i in range(len(raw)):
      for flip in (0x01, 0x80, 0xFF):
        damaged = bytearray(raw)
        damaged[i] ^= flip
        y = np.frombuffer(bytes(damaged), x.dtype).reshape(x.shape)
        assert checkpoint.checksums(y)[""] != original, (name, i, flip)
  x = np.arange(8, dtype=np.float32)
  swapped = x[[1, 0, 2, 3, 4, 5, 6, 7]]  # same plain sum, new weighted sum
  a, b = checkpoint.checksums(x)[""], checkpoint.checksums(swapped)[""]
  assert a[0] == b[0] and a[1] != b[1]


def test_sharded_array_has_the_same_checksum_as_on_one_device():
  assert jax.device_count() == 8
  x = np.random.RandomState(1).randn(64, 24).astype(np.float32)
  one = checkpoint.checksums({"x": jax.device_put(x, jax.devices()[0]),
                              "k": jax.random.PRNGKey(0)})
  mesh = jax.make_mesh((4, 2), ("a", "b"))
  for spec in (P("a", "b"), P(None, ("a", "b")), P()):
    sharded = jax.device_put(x, NamedSharding(mesh, spec))
    key = jax.device_put(jax.random.PRNGKey(0), NamedSharding(mesh, P()))
    assert checkpoint.checksums({"x": sharded, "k": key}) == one, spec
  # One replicated result: every process can read it without a gather.
  sharded = jax.device_put(x, NamedSharding(mesh, P("a", "b")))
  # pylint: disable-next=protected-access
  assert checkpoint._tree_sums({"x": sharded}).is_fully_replicated


# A real tiny run: MNIST-1D CNN, 20 steps, checkpoints at steps 10 and 20.


@pytest.fixture(scope="module")
def pristine(tfds_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ckpt") / "run")
  config = tiny_config(tfds_data_dir)
  train.train_and_evaluate(config, workdir)
  return workdir, config


@pytest.fixture
def run_copy(pristine, tmp_path):
  """A fresh copy of the finished run, to damage."""
  workdir, config = pristine
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  return copy, config


def abstract_state(config):
  run = supervised.build(config)
  return step_lib.abstract_state(run)


def train_iterator(config):
  return iter(data.train_dataset(config.data, seed=config.train.seed,
                                 process_index=0, process_count=1))


def step_dir(workdir, step):
  return os.path.join(workdir, "checkpoints", str(step))


def orbax_only(workdir, step, abstract):
  """What orbax alone restores, with no integrity check."""
  with ocp.StandardCheckpointer() as ckptr:
    return jax.device_get(
        ckptr.restore(os.path.join(step_dir(workdir, step), "state"), abstract))


def stored_iterator_state(workdir, step):
  with open(os.path.join(step_dir(workdir, step), "data",
                         "process_0-of-1.json")) as f:
    return json.load(f)


def largest_array_file(workdir, step):
  files = glob.glob(os.path.join(step_dir(workdir, step), "state", "**", "d",
                                 "*"), recursive=True)
  return max(files, key=os.path.getsize)


def xor_byte(path, offset, value=0x10):
  with open(path, "r+b") as f:
    f.seek(offset)
    byte = f.read(1)[0]
    f.seek(offset)
    f.write(bytes([byte ^ value]))


def flip_a_byte_orbax_misses(workdir, step, abstract) -> list[str]:
  """Flips one byte of the biggest array data file that orbax restores
  without complaint but as different numbers; returns the changed arrays.

  The data is zstd-compressed: most bytes are literals (a flip is silent),
  some are entropy-coded (a flip may raise), so the first few are tried.
  """
  before = orbax_only(workdir, step, abstract)
  path = largest_array_file(workdir, step)
  size = os.path.getsize(path)
  for offset in range(size // 2, size, 101):
    xor_byte(path, offset)
    try:
      after = orbax_only(workdir, step, abstract)
    except Exception:  # pylint: disable=broad-except
      after = before
    changed = [name for name, a, b in zip(names_of(before),
                                          jax.tree.leaves(before),
                                          jax.tree.leaves(after))
               if not np.array_equal(a, b)]
    if changed:
      return changed
    xor_byte(path, offset)  # undo; try the next byte
  raise AssertionError(f"no byte of {path} changes numbers silently")


def assert_same_state(a, b):
  for x, y in zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_round_trip_is_verified(run_copy, capsys):
  workdir, config = run_copy
  abstract = abstract_state(config)
  with open(os.path.join(step_dir(workdir, 20), "integrity", "metadata")) as f:
    record = json.load(f)
  assert record["arrays"]["params/Conv_0/kernel"]["shape"] == [5, 1, 25]
  assert {"data", "config", "algorithm"} <= record.keys()
  iterator = train_iterator(config)
  ckpt = checkpoint.Checkpointer(workdir)
  state, step = ckpt.restore_latest(abstract, iterator)
  assert step == 20
  assert_same_state(state, orbax_only(workdir, 20, abstract))
  assert iterator.get_state() == stored_iterator_state(workdir, 20)
  assert_same_state(ckpt.restore(10, abstract),
                    orbax_only(workdir, 10, abstract))
  ckpt.close()
  assert "damaged" not in capsys.readouterr().err


def test_flipped_byte_falls_back_and_the_resumed_run_rewrites_the_step(
    run_copy, pristine, capsys, caplog):
  workdir, config = run_copy
  abstract = abstract_state(config)
  changed = flip_a_byte_orbax_misses(workdir, 20, abstract)  # orbax: silent
  ckpt = checkpoint.Checkpointer(workdir)
  with pytest.raises(checkpoint.CorruptCheckpointError, match="step 20"):
    ckpt.restore(20, abstract)
  ckpt.close()
  capsys.readouterr()
  # The real loop: resumes from step 10 and trains steps 11-20 again.
  summary = train.train_and_evaluate(config, workdir)
  err = capsys.readouterr().err
  assert summary["resumed_from"] == 10
  for name in changed:
    assert f"checkpoint at step 20 is damaged: array {name}: checksum" in err
    assert f"step 20 is damaged: array {name}" in caplog.text  # absl warning
  assert "restored step 10 instead" in err
  assert glob.glob(os.path.join(workdir, "checkpoints", "20.damaged-*"))
  # The rewritten step 20 is intact and, training being deterministic,
  # bitwise the pristine run's.
  rewritten = checkpoint.Checkpointer(workdir).restore(20, abstract)
  assert_same_state(rewritten, orbax_only(pristine[0], 20, abstract))


def test_no_intact_checkpoint_raises_listing_every_step(run_copy):
  workdir, config = run_copy
  abstract = abstract_state(config)
  changed = {step: flip_a_byte_orbax_misses(workdir, step, abstract)
             for step in (10, 20)}
  iterator = train_iterator(config)
  ckpt = checkpoint.Checkpointer(workdir)
  with pytest.raises(checkpoint.CorruptCheckpointError) as error:
    ckpt.restore_latest(abstract, iterator)
  for step, names in changed.items():
    for name in names:
      assert f"step {step}: array {name}: checksum mismatch" in str(error.value)
  assert sorted(error.value.problems) == [10, 20]
  assert iterator.get_state() == train_iterator(config).get_state()  # untouched
  assert ckpt.manager.all_steps() == [10, 20]  # nothing moved aside


def test_truncated_file_falls_back(run_copy, capsys):
  workdir, config = run_copy
  path = largest_array_file(workdir, 20)
  os.truncate(path, os.path.getsize(path) // 2)
  ckpt = checkpoint.Checkpointer(workdir)
  state, step = ckpt.restore_latest(abstract_state(config))
  ckpt.close()
  assert step == 10
  assert "step 20 is damaged: state unreadable" in capsys.readouterr().err
  assert_same_state(state, orbax_only(workdir, 10, abstract_state(config)))


@pytest.mark.parametrize("item,edit,report", [
    ("data/process_0-of-1.json", lambda s: s.replace("20", "21"),
     "data iterator state process_0-of-1.json differs"),
    ("data/process_0-of-1.json", lambda s: s[:-3],
     "data iterator state unreadable"),
    ("config/metadata", lambda s: s.replace("0.01", "0.02"),
     "config.json differs"),
])
def test_damaged_iterator_state_or_config_is_detected(run_copy, capsys, item,
                                                      edit, report):
  workdir, config = run_copy
  path = os.path.join(step_dir(workdir, 20), item)
  with open(path) as f:
    text = f.read()
  assert edit(text) != text
  with open(path, "w") as f:
    f.write(edit(text))
  iterator = train_iterator(config)
  _, step = checkpoint.Checkpointer(workdir).restore_latest(
      abstract_state(config), iterator)
  assert step == 10
  assert f"step 20 is damaged: {report}" in capsys.readouterr().err
  assert iterator.get_state() == stored_iterator_state(workdir, 10)


# Saves of hand-made states: a killed save, failing saves.

_KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import grain, jax, jax.numpy as jnp
    from deeplearn import checkpoint
    ckpt = checkpoint.Checkpointer(sys.argv[1])
    it = iter(grain.MapDataset.range(100).batch(4).to_iter_dataset())
    next(it)
    def state(step):  # 32 MB of noise, which compression does not shrink
      w = jax.random.normal(jax.random.PRNGKey(step), (8_000_000,))
      return {"w": w, "step": jnp.int32(step)}
    ckpt.save(10, state(10), it)
    ckpt.wait()
    ckpt.save(20, state(20), it)
    # save() returned; orbax writes in the background. Die now.
    os.kill(os.getpid(), signal.SIGKILL)
""")


def hand_made_iterator():
  return iter(grain.MapDataset.range(100).batch(4).to_iter_dataset())


def test_save_killed_midway_leaves_a_tmp_folder_that_restart_removes(tmp_path):
  proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(tmp_path)],
                        capture_output=True, text=True, timeout=120,
                        env={**os.environ, "XLA_FLAGS": ""})
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  directory = tmp_path / "checkpoints"
  tmp = glob.glob(str(directory / "20.orbax-checkpoint-tmp*"))
  assert tmp and not (directory / "20").exists()
  assert not glob.glob(os.path.join(tmp[0], "commit_success.txt"))
  # A reader (evaluation beside a running job) must leave tmp folders alone:
  # one may be the job's save in flight.
  reader = checkpoint.Checkpointer(str(tmp_path), read_only=True)
  assert reader.latest_step() == 10 and os.path.isdir(tmp[0])
  with pytest.raises(checkpoint.CheckpointSaveError, match="read-only"):
    reader.save(30, {"w": jnp.ones(3)}, hand_made_iterator())
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  assert not glob.glob(str(directory / "*.orbax-checkpoint-tmp*"))
  assert ckpt.latest_step() == 10
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = {"step": jax.ShapeDtypeStruct((), jnp.int32, sharding=device),
              "w": jax.ShapeDtypeStruct((8_000_000,), jnp.float32,
                                        sharding=device)}
  state, step = ckpt.restore_latest(abstract)
  assert step == 10 and int(state["step"]) == 10
  np.testing.assert_array_equal(
      state["w"], jax.random.normal(jax.random.PRNGKey(10), (8_000_000,)))


def test_unwritable_checkpoint_folder_fails_the_save_naming_the_step(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(10, {"w": jnp.ones(4)}, hand_made_iterator())
  ckpt.wait()
  # Running as root, chmod would not stop the writes: replace the folder
  # with a file instead, so that nothing can be created under it.
  shutil.rmtree(ckpt.directory)
  with open(ckpt.directory, "w") as f:
    f.write("not a folder")
  with pytest.raises(checkpoint.CheckpointSaveError,
                     match="checkpoint at step 20 .* failed.*Not a directory"):
    ckpt.save(20, {"w": jnp.ones(4)}, hand_made_iterator())


@contextlib.contextmanager
def file_size_limit():
  """Files over 1 MB cannot be written (EFBIG): a full disk or quota.

  RLIMIT_FSIZE binds root too, unlike chmod; SIGXFSZ, which would kill the
  process, is ignored so that the write fails with an error instead.
  """
  handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  limits = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, limits[1]))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    signal.signal(signal.SIGXFSZ, handler)


def test_failed_background_save_raises_at_the_next_save_or_wait(tmp_path):
  iterator = hand_made_iterator()
  # 4 MB of noise: orbax compresses, and ones would shrink under the limit.
  big = {"w": jax.random.normal(jax.random.PRNGKey(0), (1_000_000,))}
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(10, big, iterator)
  ckpt.wait()
  with file_size_limit():
    ckpt.save(20, big, iterator)  # returns: the data is written later
    with pytest.raises(checkpoint.CheckpointSaveError,
                       match="checkpoint at step 20 .* failed while writing"):
      ckpt.wait()
    ckpt.save(30, big, iterator)
    with pytest.raises(checkpoint.CheckpointSaveError,
                       match="checkpoint at step 30 .* failed while writing"
                       ".*(File too large|Failed writing)"):
      ckpt.save(40, big, iterator)
  assert checkpoint.Checkpointer(str(tmp_path)).latest_step() == 10


def test_a_missing_tree_metadata_file_is_named_and_the_arrays_restored(
    run_copy, capsys):
  # orbax's state/_METADATA records the tree's structure; without it orbax
  # rebuilds plain dicts, which do not fit the TrainState. The arrays are
  # restored by name and checked: bitwise the intact restore.
  workdir, config = run_copy
  abstract = abstract_state(config)
  expected = orbax_only(workdir, 20, abstract)
  for step in (10, 20):  # every checkpoint lacks it
    os.remove(os.path.join(step_dir(workdir, step), "state", "_METADATA"))
  iterator = train_iterator(config)
  ckpt = checkpoint.Checkpointer(workdir)
  state, step = ckpt.restore_latest(abstract, iterator)
  ckpt.close()
  assert step == 20
  assert_same_state(state, expected)
  assert jax.tree.structure(state) == jax.tree.structure(abstract)
  assert iterator.get_state() == stored_iterator_state(workdir, 20)
  err = capsys.readouterr().err
  assert f"{step_dir(workdir, 20)}/state/_METADATA is missing" in err
  assert "damaged" not in err


def test_keep_checkpoints_keeps_at_least_one_or_all(tmp_path):
  for keep in (0, -2):
    with pytest.raises(ValueError, match=f"keep={keep}: keep at least 1"):
      checkpoint.Checkpointer(str(tmp_path / "a"), keep=keep)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "b"), keep=-1)
  state = {"w": jnp.ones(3)}
  for step in range(1, 6):
    ckpt.save(step, state, hand_made_iterator())
  ckpt.close()
  assert checkpoint.Checkpointer(str(tmp_path / "b")).manager.all_steps() == [
      1, 2, 3, 4, 5]


def test_a_step_without_a_checkpoint_is_named_with_those_there_are(
    run_copy, caplog):
  workdir, config = run_copy
  with caplog.at_level("WARNING"):
    ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  assert caplog.records == []  # no orbax warnings about the reader's options
  with pytest.raises(ValueError, match=r"No checkpoint at step 7 in .*;"
                     r" available: \[10, 20\]\."):
    ckpt.restore(7, abstract_state(config))
  ckpt.close()
