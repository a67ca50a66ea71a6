"""Runs of the CLI in a child process, for the tests that kill or signal them, and a
guard that nothing compiles before a config error."""

import contextlib
import os
import subprocess
import sys
import time

import jax

from deeplearn import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_cli(experiment, workdir, *extra, env=None):
  """`python -m deeplearn.train --config experiment --workdir workdir`."""
  return subprocess.Popen(
      [sys.executable, "-m", "deeplearn.train", "--config", experiment,
       "--workdir", str(workdir), *extra],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=env)


def n_records(workdir, split=None):
  return len(metrics.read_records(os.path.join(str(workdir), "metrics.jsonl"),
                                  split))


def wait_for_records(proc, workdir, count, timeout=120, split=None):
  """Returns once the run has written `count` records (of `split`)."""
  deadline = time.time() + timeout
  while n_records(workdir, split) < count:
    if proc.poll() is not None:
      raise AssertionError(f"run ended early: {proc.communicate()[1][-2000:]}")
    if time.time() > deadline:
      proc.kill()
      raise AssertionError(f"no {count} records after {timeout} s")
    time.sleep(0.02)


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
