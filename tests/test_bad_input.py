"""Bad input fails before any compilation, naming the key and the fix."""

import contextlib
import json
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from deeplearn import config as config_lib, data
from deeplearn.schemes import supervised

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir):
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny"))
  config.data.data_dir = data_dir
  return config


@contextlib.contextmanager
def no_compilation():
  """Fails if XLA compiles anything inside the block."""
  compiled = []

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
      compiled.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert not compiled, f"{len(compiled)} compilation(s) before the error"


def _set(key, value):
  def apply(config):
    section, _, name = key.rpartition(".")
    target = config[section] if section else config
    with config.unlocked():  # experiment files build unlocked dicts
      target[name] = value
  return apply


# (override, the message's key and value, the suggested fix)
TYPOS = {
    "model": (_set("model.name", "mnist1d_cnnn"),
              "config.model.name='mnist1d_cnnn'", "'mnist1d_cnn'"),
    "model_field": (_set("model.chanels", 8),
                    "config.model.chanels", "'channels'"),
    "dataset": (_set("data.dataset", "mnist1e"),
                "config.data.dataset='mnist1e'", "'mnist1d'"),
    "catalog_dataset": (_set("data.dataset", "mnsit"),
                        "config.data.dataset='mnsit'", "'mnist'"),
    "optimizer": (_set("optimizer.name", "adma"),
                  "config.optimizer.name='adma'", "'adam'"),
    "schedule": (_set("schedule.name", "cosin"),
                 "config.schedule.name='cosin'", "'cosine'"),
    "task": (_set("task", "clasification"),
             "config.task='clasification'", "'classification'"),
    "pp_op": (_set("data.pp_train", "standardise"),
              "config.data.pp_train='standardise'", "'standardize'"),
    "averaging": (_set("optimizer.averaging", "emma"),
                  "config.optimizer.averaging='emma'", "'ema'"),
    "mesh_axis": (_set("mesh.dta", 8), "config.mesh has unknown axes",
                  "'data'"),
    "sharding_axis": (_set("sharding.rules", (("batch", "dat"),)),
                      "config.sharding.rules maps 'batch'", "'data'"),
    "split": (_set("data.train_split", "trian"),
              "config.data.train_split='trian'", "'train'"),
}


@pytest.mark.parametrize("typo", sorted(TYPOS))
def test_a_misspelled_name_fails_before_compiling_and_suggests_the_right_one(
    tfds_data_dir, typo):
  override, key, suggestion = TYPOS[typo]
  config = tiny_config(tfds_data_dir)
  override(config)
  with no_compilation(), pytest.raises(ValueError) as error:
    run = supervised.build(config)
    # Some names (preprocessing ops, splits) are read with the data.
    data.train_dataset(config.data, seed=0, process_index=0,
                       process_count=1)
    del run
  message = str(error.value)
  assert key in message
  assert f"did you mean {suggestion}?" in message


def test_a_name_with_no_close_match_lists_the_choices_only(tfds_data_dir):
  config = tiny_config(tfds_data_dir)
  _set("optimizer.name", "lbfgs")(config)
  with pytest.raises(ValueError) as error:
    supervised.build(config)
  message = str(error.value)
  assert "did you mean" not in message
  assert "['sgd', 'adagrad', 'adam', 'adamw', 'lars', 'lamb']" in message


def test_mesh_sizes_must_use_every_device(tfds_data_dir):
  config = tiny_config(tfds_data_dir)
  config.mesh.data = 3
  with config.unlocked():
    config.mesh.model = 2
  with no_compilation(), pytest.raises(ValueError) as error:
    supervised.build(config)
  message = str(error.value)
  assert "config.mesh {'data': 3, 'model': 2} uses 6 devices but 8" in message
  assert "multiply to 8, or set one axis to -1" in message


def test_global_batch_must_divide_over_the_data_parallel_devices(
    tfds_data_dir):
  config = tiny_config(tfds_data_dir)
  config.data.batch_size = 100
  with no_compilation(), pytest.raises(ValueError) as error:
    supervised.build(config)
  message = str(error.value)
  assert "config.data.batch_size=100" in message
  assert "8 batch shards" in message and "use 96 or 104" in message
  config.data.batch_size = 100
  supervised.build(config, devices=jax.devices()[:4])  # 100 = 4 x 25


def test_a_batch_norm_axis_name_in_the_config_is_refused(tfds_data_dir):
  # Under jit there is no named axis to average over (the statistics are
  # already global); without the check flax fails mid-trace on the name.
  config = tiny_config(tfds_data_dir)
  with config.unlocked():
    config.model = ml_collections.ConfigDict(
        {"name": "mlp", "num_classes": 10, "hidden_sizes": (16,),
         "batch_norm": True, "bn_axis_name": "data"})
  with no_compilation(), pytest.raises(ValueError) as error:
    supervised.build(config)
  message = str(error.value)
  assert "config.model.bn_axis_name='data': leave it unset" in message
  assert "step_form='shard_map'" in message


# Workdirs. Tests run as root, whom chmod does not stop: these paths fail for
# any user.

def test_workdir_under_a_regular_file_is_rejected(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  workdir = blocker / "run"
  with pytest.raises(ValueError, match="is not a directory") as error:
    config_lib.check_workdir(str(workdir))
  assert repr(str(workdir)) in str(error.value)
  assert "Choose a --workdir" in str(error.value)
  with pytest.raises(ValueError, match="is not a directory"):
    config_lib.check_workdir(str(blocker))  # the workdir itself a file


def test_workdir_through_a_broken_link_is_rejected(tmp_path):
  os.symlink(tmp_path / "gone", tmp_path / "link")
  with pytest.raises(ValueError, match="is a broken link"):
    config_lib.check_workdir(str(tmp_path / "link" / "run"))


def test_workdir_on_a_filesystem_that_refuses_files_is_rejected():
  # sysfs refuses to create files, even for root.
  if not os.path.isdir("/sys/kernel"):
    pytest.skip("no sysfs")
  with pytest.raises(ValueError, match="'/sys/kernel/run' is not writable"):
    config_lib.check_workdir("/sys/kernel/run")


def test_a_new_nested_workdir_passes_and_nothing_is_created(tmp_path):
  config_lib.check_workdir(str(tmp_path / "runs" / "cnn"))
  config_lib.check_workdir(str(tmp_path))  # an existing one
  assert os.listdir(tmp_path) == []


# Resuming with a changed config.

def stored_and_new(data_dir="/data"):
  """A stored config as the workdir's config.json gives it back, and a copy."""
  config = tiny_config(data_dir)
  stored = config_lib.from_json(config_lib.to_json(config))
  return stored, config_lib.from_json(config_lib.to_json(config))


@pytest.mark.parametrize("path", sorted(
    p for p in os.listdir(os.path.join(ROOT, "experiments"))
    if p.endswith(".py")))
def test_a_config_equals_its_stored_json(path):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", path))
  stored = config_lib.from_json(config_lib.to_json(config))
  assert config_lib.resume_differences(stored, config) == ([], [])


def test_unsafe_resume_raises_listing_every_difference_and_the_fix():
  stored, new = stored_and_new()
  new.optimizer.learning_rate = 0.05
  new.model.channels = 32  # a field the stored run left at its default
  new.data.batch_size = 64
  new.train.seed = 1
  new.train.num_steps = 40  # safe: constant schedule
  new.mesh.data = 4  # safe: restores onto any mesh
  unsafe, safe = config_lib.resume_differences(stored, new)
  assert unsafe == ["config.data.batch_size: 32 -> 64",
                    "config.model.channels: <absent> -> 32",
                    "config.optimizer.learning_rate: 0.01 -> 0.05",
                    "config.train.seed: 0 -> 1"]
  assert safe == ["config.mesh.data: -1 -> 4",
                  "config.train.num_steps: 20 -> 40"]
  with pytest.raises(ValueError) as error:
    config_lib.check_resume(stored, new)
  message = str(error.value)
  for line in unsafe:
    assert line in message
  assert "config.train.num_steps" not in message
  assert "use a new --workdir" in message
  assert "restore the stored values" in message


def test_safe_resume_changes_pass_and_are_returned():
  stored, new = stored_and_new()
  changes = {"train.num_steps": 40, "train.log_every": 1,
             "train.eval_every": 5, "train.checkpoint_every": 5,
             "train.keep_checkpoints": 3, "train.progress": False,
             "data.data_dir": "/elsewhere", "data.num_workers": 2,
             "data.eval_batch_size": 500, "data.eval_split": "train",
             "data.prepare": False, "eval.best_metric": "loss",
             "mesh.data": 1, "sharding.rules": (("batch", "data"),),
             "data.pp_train": "standardize|flip_lr",
             "data.pp_eval": "standardize|scale(0.5)"}
  for key, value in changes.items():
    _set(key, value)(new)
  safe = config_lib.check_resume(stored, new)
  assert [line.split(":")[0] for line in safe] == sorted(
      f"config.{key}" for key in changes)
  assert "config.train.num_steps: 20 -> 40" in safe


def test_a_key_added_since_the_stored_run_differs_only_off_its_default():
  # Workdirs written before a config key existed stay resumable.
  stored, new = stored_and_new()
  del stored.train["keep_checkpoints"]
  del stored.optimizer["ema_decay"]
  assert config_lib.resume_differences(stored, new) == ([], [])
  new.optimizer.ema_decay = 0.5
  assert config_lib.resume_differences(stored, new) == (
      ["config.optimizer.ema_decay: <absent> -> 0.5"], [])


def test_extending_a_run_whose_schedule_spans_it_is_unsafe():
  stored, new = stored_and_new()
  stored.schedule.name = new.schedule.name = "cosine"
  new.train.num_steps = 40
  unsafe, safe = config_lib.resume_differences(stored, new)
  assert safe == [] and len(unsafe) == 1
  assert unsafe[0].startswith("config.train.num_steps: 20 -> 40 (the cosine")
  # With its decay length fixed, the schedule no longer depends on the run.
  stored.schedule.decay_steps = new.schedule.decay_steps = 20
  assert config_lib.resume_differences(stored, new) == (
      [], ["config.train.num_steps: 20 -> 40"])


# Nothing we load can run code.

UNSAFE_LOADS = re.compile(
    r"pickle\.loads?\(|allow_pickle\s*=\s*True|torch\.load\(|joblib\.load\("
    r"|dill\.loads?\(|read_pickle\(")


def test_no_source_file_unpickles():
  hits = []
  for folder in ("deeplearn", "experiments", "launch"):
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(dirpath, name)
          with open(path) as f:
            for number, line in enumerate(f, 1):
              if UNSAFE_LOADS.search(line):
                hits.append(f"{os.path.relpath(path, ROOT)}:{number}: {line}")
  assert not hits, "unsafe loading:\n" + "".join(hits)


_AUDIT_UNPICKLING = """
import sys
found = []
sys.addaudithook(
    lambda event, args: found.append(args) if event == "pickle.find_class"
    else None)
from deeplearn.data import pipeline
from deeplearn import config as config_lib
for name in ("mnist1d", "digits", "tiny_shakespeare"):
  cfg = config_lib.default_config().data
  cfg.update(dataset=name, data_dir=sys.argv[1], seq_len=32)
  pipeline.get_info(cfg)
  next(iter(pipeline.train_dataset(cfg, seed=0, process_index=0,
                                   process_count=1)))
print("data unpickled:", found)
import pickle, numpy
pickle.loads(pickle.dumps(numpy.zeros(1)))
print("the hook sees unpickling:", bool(found))
"""


def test_offline_datasets_build_and_read_without_unpickling(tmp_path):
  # The mnist1d package's get_dataset() unpickles a downloaded file; our
  # builder generates the data with make_dataset() instead. Python's audit
  # hook sees every class an unpickler looks up.
  proc = subprocess.run(
      [sys.executable, "-c", _AUDIT_UNPICKLING, str(tmp_path)], cwd=ROOT,
      capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "data unpickled: []" in proc.stdout, proc.stdout[-3000:]
  assert "the hook sees unpickling: True" in proc.stdout


@pytest.mark.parametrize("before,after", [(0, 2), (2, 0)])
def test_a_resume_may_change_the_number_of_data_workers(tfds_data_dir, before,
                                                        after):
  # data.num_workers is resume-safe: the iterator's checkpointed state is the
  # same with and without worker processes.
  config = tiny_config(tfds_data_dir)

  def batches(num_workers):
    config.data.num_workers = num_workers
    return iter(data.train_dataset(config.data, seed=0, process_index=0,
                                   process_count=1))

  reference = batches(0)
  expected = [next(reference) for _ in range(7)]
  it = batches(before)
  got = [next(it) for _ in range(4)]
  state = json.loads(json.dumps(it.get_state()))  # as a checkpoint stores it
  it.close()
  resumed = batches(after)
  resumed.set_state(state)
  got += [next(resumed) for _ in range(3)]
  resumed.close()
  for a, b in zip(got, expected, strict=True):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["label"], b["label"])
