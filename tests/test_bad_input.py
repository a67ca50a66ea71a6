"""Bad input fails before any compilation, naming the key and the fix.

Every bad input is one row of BAD_INPUTS: how to give it (a config change,
an experiment file, a command line) and the words its message must contain.
"""

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import pytest

from deeplearn import config as config_lib, data
from deeplearn.schemes import supervised
from run_helpers import no_compilation, start_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny")


def tiny_config(data_dir):
  config = config_lib.from_file(TINY)
  config.data.data_dir = data_dir
  return config


def _set(key, value):
  def apply(config):
    section, _, name = key.rpartition(".")
    target = config[section] if section else config
    with config.unlocked():  # experiment files build unlocked dicts
      target[name] = value
  return apply


@dataclasses.dataclass(frozen=True)
class Change:
  """Keys set on the tiny experiment, in-process: supervised.build (then the
  training data, which reads some names) raises; with `warns`, it prints.
  A callable value is called with the test's tmp_path."""
  keys: dict[str, Any]
  warns: bool = False


@dataclasses.dataclass(frozen=True)
class File:
  """An experiment file with this text: config.from_file raises."""
  text: str


@dataclasses.dataclass(frozen=True)
class Cli:
  """`python -m deeplearn.train` on the tiny experiment (or an experiment
  file with `text`) with `args`: exits non-zero, the message in stderr.
  `workdir(tmp_path, cleanup)` may prepare the workdir (a full disk)."""
  args: tuple[str, ...] = ()
  text: str | None = None
  workdir: Callable | None = None


def mlp_model(**fields):
  return ml_collections.ConfigDict({"name": "mlp", "num_classes": 10,
                                    "hidden_sizes": (16,), **fields})


NO_RETURN = """
from deeplearn.config import default_config

def get_config(arg=None):
  config = default_config()
"""


def full_disk(tmp_path, cleanup):
  """A workdir on a 1 MiB tmpfs filled to the last byte."""
  disk = tmp_path / "disk"
  disk.mkdir()
  mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                          str(disk)], capture_output=True, text=True)
  if mount.returncode:
    pytest.skip(f"cannot mount a tmpfs: {mount.stderr.strip()}")
  cleanup.callback(subprocess.run, ["umount", str(disk)], check=True)
  with open(disk / "filler", "wb", buffering=0) as f:
    with contextlib.suppress(OSError):
      while True:
        f.write(b"\0" * 4096)
  return disk / "run"


# name: (how to give it, what its message contains). Each new bad input is
# one more row.
BAD_INPUTS = {
    # Misspelled names: the key and the closest right one.
    "model": (Change({"model.name": "mnist1d_cnnn"}),
              ("config.model.name='mnist1d_cnnn'",
               "did you mean 'mnist1d_cnn'?")),
    "model_field": (Change({"model.chanels": 8}),
                    ("config.model.chanels", "did you mean 'channels'?")),
    "dataset": (Change({"data.dataset": "mnist1e"}),
                ("config.data.dataset='mnist1e'", "did you mean 'mnist1d'?")),
    "catalog_dataset": (Change({"data.dataset": "mnsit"}),
                        ("config.data.dataset='mnsit'",
                         "did you mean 'mnist'?")),
    "optimizer": (Change({"optimizer.name": "adma"}),
                  ("config.optimizer.name='adma'", "did you mean 'adam'?")),
    "schedule": (Change({"schedule.name": "cosin"}),
                 ("config.schedule.name='cosin'", "did you mean 'cosine'?")),
    "task": (Change({"task": "clasification"}),
             ("config.task='clasification'",
              "did you mean 'classification'?")),
    "pp_op": (Change({"data.pp_train": "standardise"}),
              ("config.data.pp_train='standardise'",
               "did you mean 'standardize'?")),
    "averaging": (Change({"optimizer.averaging": "emma"}),
                  ("config.optimizer.averaging='emma'",
                   "did you mean 'ema'?")),
    "mesh_axis": (Change({"mesh.dta": 8}),
                  ("config.mesh has unknown axes", "did you mean 'data'?")),
    "sharding_axis": (Change({"sharding.rules": (("batch", "dat"),)}),
                      ("config.sharding.rules maps 'batch'",
                       "did you mean 'data'?")),
    "split": (Change({"data.train_split": "trian"}),
              ("config.data.train_split='trian'", "did you mean 'train'?")),
    "activation_typo": (Change({"model": mlp_model(activation="relux")}),
                        ("config.model.activation='relux'",
                         "did you mean 'relu'?")),
    # Not an activation: a layer class, a normalisation across features.
    "activation_layer": (Change({"model": mlp_model(activation="Dense")}),
                         ("config.model.activation='Dense' is not an"
                          " elementwise activation", "'relu', 'gelu'")),
    "activation_softmax": (Change({"model": mlp_model(activation="softmax")}),
                           "config.model.activation='softmax' is not an"
                           " elementwise activation"),
    "kernel_init": (Change({"model": mlp_model(kernel_init="he_normall")}),
                    ("config.model.kernel_init='he_normall'",
                     "did you mean 'he_normal'?")),
    # Devices and mesh.
    "mesh_sizes": (Change({"mesh.data": 3, "mesh.model": 2}),
                   ("config.mesh {'data': 3, 'model': 2} uses 6 devices but 8",
                    "multiply to 8, or set one axis to -1")),
    "batch_over_devices": (Change({"data.batch_size": 100}),
                           ("config.data.batch_size=100", "8 batch shards",
                            "use 96 or 104")),
    "bn_axis_name": (Change({"model.bn_axis_name": "data"}),
                     ("config.model.bn_axis_name='data': leave it unset",
                      "step_form='shard_map'")),
    # Numbers out of range.
    "keep_no_checkpoint": (Change({"train.keep_checkpoints": 0}),
                           ("config.train.keep_checkpoints=0",
                            "-1 keeps all")),
    "keep_negative_checkpoints": (Change({"train.keep_checkpoints": -3}),
                                  ("config.train.keep_checkpoints=-3",
                                   "-1 keeps all")),
    "negative_steps": (Change({"train.num_steps": -5}),
                       ("config.train.num_steps=-5", "must be >= 0")),
    "negative_epochs": (Change({"train.num_steps": 0, "train.num_epochs": -1.0}),
                        ("config.train.num_epochs=-1.0", "must be >= 0")),
    "epochs_round_to_no_step": (
        Change({"train.num_steps": 0, "train.num_epochs": 0.001}),
        ("config.train.num_epochs=0.001", "0 steps", "4000 examples",
         "at least 0.008")),
    "negative_batch": (Change({"data.batch_size": -4}),
                       ("config.data.batch_size=-4 must be positive",
                        "e.g. 8")),
    "negative_eval_batch": (Change({"data.eval_batch_size": -8}),
                            "config.data.eval_batch_size=-8 must be positive"),
    "batch_over_split": (Change({"data.batch_size": 100_000}),
                         ("config.data.batch_size=100000",
                          "4000 examples", "'train' split")),
    "zero_width": (Change({"model.channels": 0}),
                   ("config.model.channels=0 must be >= 1",)),
    "negative_width_in_a_tuple": (
        Change({"model": mlp_model(hidden_sizes=(16, -2))}),
        "config.model.hidden_sizes=(16, -2) must be >= 1"),
    "negative_seed": (Change({"train.seed": -1}),
                      ("config.train.seed=-1", "must be >= 0")),
    "nan_learning_rate": (Change({"optimizer.learning_rate": float("nan")}),
                          ("config.optimizer.learning_rate=nan",
                           "a finite number")),
    "inf_weight_decay": (Change({"optimizer.weight_decay": float("inf")}),
                         ("config.optimizer.weight_decay=inf",
                          "a finite number")),
    # Experiment files and the command line.
    "get_config_returns_none": (File(NO_RETURN),
                                ("get_config() returned None",
                                 "must return the ConfigDict")),
    "cli_get_config_returns_none": (Cli(text=NO_RETURN),
                                    ("get_config() returned None",
                                     "must return the ConfigDict")),
    "cli_missing_section": (Cli(("--config.foo.bar=1",)),
                            ("--config.foo.bar", "config has no section 'foo'",
                             "'optimizer'")),
    "cli_missing_mesh_axis": (Cli(("--config.mesh.model=2",)),
                              ("--config.mesh.model",
                               "config.mesh has no axis 'model'",
                               "axes: ['data']", "config.mesh.model = 2")),
    "cli_misspelled_key": (Cli(("--config.optimizer.learnin_rate=0.1",)),
                           ("error: --config.optimizer.learnin_rate: config."
                            "optimizer has no key 'learnin_rate'; did you mean"
                            " 'learning_rate'?",)),
    "cli_wrong_type": (Cli(("--config.train.num_steps=abc",)),
                       ("--config.train.num_steps=abc", "invalid literal")),
    "cli_check_after_loading": (Cli(("--config.data.batch_size=-4",)),
                                ("error: config.data.batch_size=-4 must be"
                                 " positive",)),
    "cli_full_disk": (Cli(workdir=full_disk),
                      ("is on a full filesystem", "bytes free")),
    # Warned about: one line at the start, the run goes on.
    "negative_learning_rate": (Change({"optimizer.learning_rate": -0.01},
                                      warns=True),
                               ("config.optimizer.learning_rate=-0.01",
                                "gradient ascent")),
    "missing_data_dir": (Change({"data.data_dir": lambda tmp: str(tmp / "new")},
                                warns=True),
                         ("config.data.data_dir=", "/new' does not exist",
                          "will be created")),
}


def given(how: Cli, tmp_path, cleanup) -> str:
  """The CLI run's stderr; asserts that it failed."""
  spec = TINY
  if how.text is not None:
    spec = str(tmp_path / "experiment.py")
    with open(spec, "w") as f:
      f.write(how.text)
  workdir = how.workdir(tmp_path, cleanup) if how.workdir else tmp_path / "run"
  proc = start_cli(spec, workdir, *how.args,
                   env={**os.environ, "JAX_PLATFORMS": "cpu"})
  _, stderr = proc.communicate(timeout=300)
  # A user's error: one clean line and exit 2 (deeplearn/cli.py).
  assert proc.returncode == 2, stderr[-3000:]
  assert "Traceback" not in stderr and "FATAL" not in stderr, stderr[-3000:]
  assert len([l for l in stderr.splitlines() if l.startswith("error: ")]) == 1
  return stderr


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_fails_before_compiling_naming_the_key_and_the_fix(
    tfds_data_dir, tmp_path, capsys, name):
  how, message = BAD_INPUTS[name]
  if isinstance(how, Cli):
    with contextlib.ExitStack() as cleanup:
      text = given(how, tmp_path, cleanup)
  elif isinstance(how, File):
    path = tmp_path / "experiment.py"
    path.write_text(how.text)
    with pytest.raises(ValueError) as error:
      config_lib.from_file(str(path))
    text = str(error.value)
  else:
    config = tiny_config(tfds_data_dir)
    for key, value in how.keys.items():
      _set(key, value(tmp_path) if callable(value) else value)(config)
    if how.warns:
      with no_compilation():
        supervised.build(config)
      text = capsys.readouterr().out
    else:
      with no_compilation(), pytest.raises(ValueError) as error:
        supervised.build(config)
        data.train_dataset(config.data, seed=0, process_index=0,
                           process_count=1)
      text = str(error.value)
  for part in (message,) if isinstance(message, str) else message:
    assert part in text, text[-3000:]
  if isinstance(how, Change) and how.warns:
    assert text.count("warning:") == 1, text  # one line, printed once


def test_a_name_with_no_close_match_lists_the_choices_only(tfds_data_dir):
  config = tiny_config(tfds_data_dir)
  _set("optimizer.name", "lbfgs")(config)
  with pytest.raises(ValueError) as error:
    supervised.build(config)
  message = str(error.value)
  assert "did you mean" not in message
  assert "['sgd', 'adagrad', 'adam', 'adamw', 'lars', 'lamb']" in message


def test_a_batch_that_divides_over_fewer_devices_passes(tfds_data_dir):
  config = tiny_config(tfds_data_dir)
  config.data.batch_size = 100  # refused over 8 devices (BAD_INPUTS)
  supervised.build(config, devices=jax.devices()[:4])  # 100 = 4 x 25


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
      ["config.optimizer.ema_decay: 0.999 -> 0.5"], [])  # the stored run's default


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


def test_a_default_key_the_experiment_leaves_out_resumes():
  # config.model replaced whole, without the default `name`: the stored
  # config reads back with name '' filled in; that is no difference.
  config = config_lib.default_config()
  config.model = ml_collections.ConfigDict({"width": 3})
  stored = config_lib.from_json(config_lib.to_json(config))
  assert config_lib.resume_differences(stored, config) == ([], [])
