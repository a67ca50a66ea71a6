"""Runs of the CLI in a child process, for the tests that kill or signal them."""

import os
import subprocess
import sys
import time

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
