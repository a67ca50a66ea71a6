"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""

import os

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Runs default to a persistent compilation cache in the home directory
# (config.train.compilation_cache_dir); tests compile afresh and write
# nothing there. tests/test_perf_metrics.py turns it on in a temporary dir.
os.environ.setdefault("JAX_ENABLE_COMPILATION_CACHE", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
  """One TFDS data dir per test session: builders prepare into it once."""
  return str(tmp_path_factory.mktemp("tensorflow_datasets"))
