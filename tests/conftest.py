"""Test setup: 8 simulated CPU devices and one compilation cache for the test
session, set before jax is imported anywhere."""

import os
import shutil
import signal
import tempfile

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Runs default to a persistent compilation cache in the home directory
# (config.train.compilation_cache_dir). The tests write nothing there: the
# session has its own cache, made here in the controlling process (xdist's
# workers and every child process inherit the variables) and removed at the
# end, so a clean checkout compiles afresh while the runs a test repeats (a
# killed run and its resume, a tiny run two tests make) load
# what an earlier one compiled.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="deeplearn-tests-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
else:
  _CACHE = None

# A suite started in the background (`nohup ... &`) inherits SIGINT ignored, and
# Python then installs no KeyboardInterrupt handler, here or in the runs it starts:
# the Ctrl-C tests need the handler a terminal gives.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402


def pytest_unconfigure(config):
  if _CACHE and not hasattr(config, "workerinput"):  # the controlling process
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
  """One TFDS data dir per test session: builders prepare into it once."""
  return str(tmp_path_factory.mktemp("tensorflow_datasets"))
