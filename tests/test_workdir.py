"""The workdir's files: one run at a time, nothing rewritten in place, the
checkpoint's own config as the reference, and damage named, not fatal.

Each test uses the real CLI or the real failure: a second process, a real
signal, a full filesystem (a small tmpfs), a file damaged on disk.
"""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest
from tensorboardX.proto import event_pb2

from deeplearn import files, metrics, preemption
from run_helpers import ROOT, n_records, start_cli, wait_for_records

TINY = os.path.join(ROOT, "experiments", "mnist1d_cnn.py") + ":tiny"


def cli(workdir, data_dir, *overrides, timeout=300):
  """Runs the tiny experiment in `workdir` to its end; the finished process."""
  proc = start_cli(TINY, workdir, f"--config.data.data_dir={data_dir}",
                   "--config.train.progress=False", *overrides)
  out, err = proc.communicate(timeout=timeout)
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def start_endless(workdir, data_dir):
  """The tiny experiment with a record every step and no end, checkpoint or
  evaluation in sight: for tests that stop it themselves."""
  return start_cli(TINY, workdir, f"--config.data.data_dir={data_dir}",
                   "--config.train.progress=False",
                   "--config.train.num_steps=1000000",
                   "--config.train.log_every=1",
                   "--config.train.eval_every=1000000",
                   "--config.train.checkpoint_every=1000000")


def ok(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.fixture(scope="module")
def finished(tfds_data_dir, tmp_path_factory):
  """A finished 20-step run (checkpoints at 10 and 20, a record every 5
  steps); tests work on copies of it."""
  workdir = str(tmp_path_factory.mktemp("finished") / "run")
  ok(cli(workdir, tfds_data_dir, "--config.train.log_every=1"))
  return workdir


@pytest.fixture
def run_copy(finished, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished, workdir)
  return workdir


def read(path):
  with open(path) as f:
    return f.read()


# 1. The checkpoint's own config is the reference for a resume.

def test_a_resume_is_checked_against_the_checkpoints_config_not_config_json(
    run_copy, tfds_data_dir):
  os.remove(os.path.join(run_copy, "config.json"))
  proc = cli(run_copy, tfds_data_dir, "--config.train.num_steps=30",
             "--config.optimizer.learning_rate=0.5")
  assert proc.returncode != 0
  assert "config.optimizer.learning_rate: 0.01 -> 0.5" in proc.stderr
  assert not os.path.exists(os.path.join(run_copy, "checkpoints", "30"))


def test_a_garbled_config_json_is_named_and_rewritten_from_the_checkpoint(
    run_copy, tfds_data_dir):
  path = os.path.join(run_copy, "config.json")
  with open(path, "w") as f:
    f.write('{\n  "data": {\n  garbage')
  proc = ok(cli(run_copy, tfds_data_dir, "--config.train.num_steps=30"))
  assert f"{path} is unreadable (line 3, column 3" in proc.stdout
  assert "checked against the config stored in its checkpoint at step 20" in proc.stdout
  assert "resuming at step 20" in proc.stdout
  assert json.loads(read(path))["train"]["num_steps"] == 30
  # The new checkpoints store the resumed run's config: the next resume is
  # checked against step 30's.
  os.remove(path)
  proc = cli(run_copy, tfds_data_dir, "--config.train.num_steps=40",
             "--config.train.seed=3")
  assert proc.returncode != 0 and "config.train.seed: 0 -> 3" in proc.stderr


# 2. One run per workdir.

def test_a_second_run_in_a_busy_workdir_stops_at_once_naming_the_holder(
    tmp_path, tfds_data_dir):
  workdir = tmp_path / "run"
  first = start_endless(workdir, tfds_data_dir)
  try:
    wait_for_records(first, workdir, 2)
    second = cli(workdir, tfds_data_dir, "--config.optimizer.learning_rate=0.5")
    assert second.returncode != 0
    assert f"The workdir {workdir} is in use by another run (pid {first.pid}" in second.stderr
    assert first.poll() is None  # the first run goes on
    records = n_records(workdir)
    time.sleep(1)
    assert n_records(workdir) > records
  finally:
    first.kill()  # SIGKILL: the lock must not outlive the process
    first.communicate()
  # The killed run left no checkpoint: the next run starts afresh, alone.
  proc = ok(cli(workdir, tfds_data_dir))
  steps = [r["step"] for r in metrics.read_records(
      os.path.join(workdir, "metrics.jsonl"), "train")]
  assert steps[-4:] == [5, 10, 15, 20] and len(steps) == len(set(steps))
  assert "done:" in proc.stdout


def test_the_lock_is_one_per_process_index_and_reentrant(tmp_path):
  workdir = str(tmp_path / "run")
  with files.workdir_lock(workdir, 0):
    with files.workdir_lock(workdir, 0):  # the entry point, then the loop
      pass
    with files.workdir_lock(workdir, 1):  # process 1 of the same run
      pass
    holder = subprocess.run(
        [sys.executable, "-c", "import sys; from deeplearn import files\n"
         "with files.workdir_lock(sys.argv[1], 0): pass", workdir],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert holder.returncode != 0
    assert f"in use by another run (pid {os.getpid()}" in holder.stderr


def test_a_failed_start_removes_the_workdir_it_created(tmp_path):
  workdir = tmp_path / "new"
  with pytest.raises(ValueError):
    with files.workdir_lock(str(workdir)):
      raise ValueError("a bad config")
  assert not workdir.exists()


# 4, 5, 7. Files rewritten only atomically; damage named and repaired.

@pytest.fixture
def small_disk(tmp_path):
  """A 1 MiB tmpfs and a function that fills it to the last byte."""
  mount = tmp_path / "disk"
  mount.mkdir()
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                         str(mount)], capture_output=True, text=True)
  if proc.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")

  def fill():
    with open(mount / "filler", "wb", buffering=0) as f:
      try:
        while True:
          f.write(b"\0" * 4096)
      except OSError:
        pass

  yield mount, fill
  subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_trimming_metrics_on_a_full_disk_keeps_the_history(small_disk):
  disk, fill = small_disk
  writer = metrics.MetricWriter(str(disk))
  for step in range(1, 12):
    writer.write(step, "train", {"loss": 1.0 / step})
  path = str(disk / "metrics.jsonl")
  before = read(path)
  fill()
  with pytest.raises(files.WriteError, match="Could not write .*metrics.jsonl.*"
                     "the disk is full"):
    writer.truncate_after(5)
  assert read(path) == before  # 11 lines, not 0
  assert [n for n in os.listdir(disk) if ".tmp" in n] == []
  writer.close()


def test_write_atomic_on_a_full_disk_leaves_the_old_file_and_no_tmp(small_disk):
  disk, fill = small_disk
  path = str(disk / "summary.json")
  files.write_atomic(path, '{"old": 1}')
  fill()
  with pytest.raises(files.WriteError, match="summary.json: No space left"):
    files.write_atomic(path, json.dumps({"new": "x" * 100_000}))
  assert read(path) == '{"old": 1}'
  assert sorted(os.listdir(disk)) == ["filler", "summary.json"]


def test_a_damaged_metrics_line_is_named_skipped_and_repaired(
    run_copy, tfds_data_dir):
  path = os.path.join(run_copy, "metrics.jsonl")
  lines = read(path).splitlines(keepends=True)
  lines[3] = '{"step": 4, "spl\x00\x00 damaged\n'
  with open(path, "w") as f:
    f.writelines(lines)
  proc = ok(cli(run_copy, tfds_data_dir, "--config.train.num_steps=30"))
  assert f"{path} line 4 is not a metrics record" in proc.stdout
  problems = []
  train = metrics.read_records(path, "train", problems=problems)
  assert problems == []  # repaired
  assert [r["step"] for r in train] == [
      s for s in range(1, 21) if s != 4] + [25, 30]


def test_a_truncated_summary_is_written_again_from_the_checkpoint(
    run_copy, tfds_data_dir):
  path = os.path.join(run_copy, "summary.json")
  original = json.loads(read(path))
  with open(path, "w") as f:
    f.write(read(path)[:100])
  proc = ok(cli(run_copy, tfds_data_dir))
  assert f"{path} is unreadable (line" in proc.stdout
  assert "writing it anew" in proc.stdout
  summary = json.loads(read(path))
  assert summary["final"] == original["final"]
  assert summary["best"] == original["best"]


def test_the_summary_of_a_run_killed_before_writing_it_keeps_its_timing(
    run_copy, tfds_data_dir):
  # A run killed between its final checkpoint and summary.json: the timing
  # totals travel in the checkpoint.
  path = os.path.join(run_copy, "summary.json")
  original = json.loads(read(path))
  os.remove(path)
  ok(cli(run_copy, tfds_data_dir))
  summary = json.loads(read(path))
  assert summary["examples_per_s"] == original["examples_per_s"]
  assert summary["examples_per_s"] is not None
  assert summary["wall_s"] >= original["wall_s"] - 1.0  # carried, not restarted
  assert summary["resumed_from"] == 20


# 9. Ctrl-C saves.

def test_ctrl_c_saves_a_checkpoint_and_exits_as_interrupted(tmp_path,
                                                             tfds_data_dir):
  workdir = tmp_path / "run"
  proc = start_endless(workdir, tfds_data_dir)
  wait_for_records(proc, workdir, 3)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == -signal.SIGINT, err[-3000:]  # as Ctrl-C would
  assert "Ctrl-C: saving a checkpoint after this step" in err
  assert "Traceback" not in err
  line = [l for l in out.splitlines() if l.startswith("interrupted (Ctrl-C)")]
  assert line, out[-2000:]
  step = int(line[0].split("checkpoint at step ")[1].split()[0])
  assert os.listdir(workdir / "checkpoints") == [str(step)]
  resumed = ok(cli(workdir, tfds_data_dir, f"--config.train.num_steps={step + 5}"))
  assert f"resuming at step {step}" in resumed.stdout


def test_a_second_ctrl_c_stops_at_once():
  # The watcher, with real signals to this process.
  watcher = preemption.Watcher()
  try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)
    assert watcher.reached(1) and watcher.signal == "SIGINT"
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.1)
  finally:
    watcher.close()
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# 12. TensorBoard's events reach the disk at every log interval.

def events(workdir):
  """The Event protos of the workdir's TensorBoard events file(s)."""
  out = []
  for name in sorted(os.listdir(workdir)):
    if name.startswith("events.out.tfevents"):
      with open(os.path.join(workdir, name), "rb") as f:
        data = f.read()
      offset = 0  # TFRecords: length u64, its crc u32, payload, payload crc
      while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        payload = data[offset + 12:offset + 12 + length]
        if len(payload) < length:
          break
        out.append(event_pb2.Event.FromString(payload))
        offset += 12 + length + 4
  return out


def tensorboard_steps(workdir, tag):
  """The steps of `tag`'s scalars in the workdir's events file(s)."""
  return [e.step for e in events(workdir) for v in e.summary.value
          if v.tag == tag]


def test_tensorboard_events_survive_a_killed_run(tmp_path, tfds_data_dir):
  workdir = tmp_path / "run"
  proc = start_endless(workdir, tfds_data_dir)
  wait_for_records(proc, workdir, 6)  # step 6's line: step 5's events done
  proc.kill()
  proc.communicate()
  steps = tensorboard_steps(str(workdir), "train/loss")
  assert steps[:5] == [1, 2, 3, 4, 5]


def test_images_are_written_as_png_and_tensorboard_images(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
  rgb = np.stack([grey, 255 - grey, grey], axis=-1)
  writer.images(40, {"samples": grey, "reconstructions": rgb})
  with pytest.raises(ValueError, match="image 'bad': float32"):
    writer.images(40, {"bad": grey.astype(np.float32)})
  writer.close()
  np.testing.assert_array_equal(
      np.asarray(PIL.Image.open(tmp_path / "images" / "samples" / "00000040.png")),
      grey)
  np.testing.assert_array_equal(np.asarray(PIL.Image.open(
      tmp_path / "images" / "reconstructions" / "00000040.png")), rgb)
  images = [(v.tag, e.step) for e in events(str(tmp_path))
            for v in e.summary.value if v.HasField("image")]
  assert sorted(images) == [("reconstructions", 40), ("samples", 40)]


def test_evaluate_names_a_missing_step_in_one_line_without_orbax_warnings(finished):
  proc = subprocess.run(
      [sys.executable, "-m", "deeplearn.evaluate", "--workdir", finished, "--step", "7"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert (f"error: No checkpoint at step 7 in {finished}/checkpoints;"
          " available: [10, 20].") in proc.stderr
  assert "Traceback" not in proc.stderr and "read_only" not in proc.stderr
