"""The loop's performance figures and the persistent compilation cache."""

import json
import math
import os
import subprocess
import sys

import pytest

from deeplearn import config as config_lib, metrics, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A fresh process (without the suite's own cache): point the cache at argv[1],
# compile one small function, report the cache options and jax's cache events.
CHILD = """
import json, sys
import jax, jax.numpy as jnp
from deeplearn import loop
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
loop.use_compilation_cache(sys.argv[1])
jax.jit(lambda x: jnp.tanh(x) * 3.0 + 1.0)(jnp.ones(7)).block_until_ready()
print(json.dumps({
    "dir": jax.config.jax_compilation_cache_dir,
    "min_compile_s": jax.config.jax_persistent_cache_min_compile_time_secs,
    "min_bytes": jax.config.jax_persistent_cache_min_entry_size_bytes,
    "hits": events.count("/jax/compilation_cache/cache_hits")}))
"""


def test_train_metrics_and_summary_report_data_wait_and_compile_time(
    tfds_data_dir, tmp_path):
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny"))
  config.data.data_dir = tfds_data_dir
  config.train.update(progress=False, num_steps=12, log_every=3)
  summary = train.train_and_evaluate(config, str(tmp_path))
  records = metrics.read_records(str(tmp_path / "metrics.jsonl"), "train")
  assert len(records) == 4
  for record in records:
    assert 0.0 <= record["data_wait_fraction"] <= 1.0
    assert math.isfinite(record["data_wait_s"]) and record["data_wait_s"] >= 0
    assert math.isfinite(record["step_s"]) and record["step_s"] > 0
  for key in ("lower_s", "compile_s", "startup_s", "data_wait_s"):
    assert math.isfinite(summary[key]) and summary[key] >= 0, key
  assert summary["startup_s"] >= summary["lower_s"] + summary["compile_s"]
  assert 0.0 <= summary["data_wait_fraction"] <= 1.0
  # Records carry their write time, in order.
  times = [r["time"] for r in records]
  assert times == sorted(times) and times[0] > 1.7e9
  # FLOPs: XLA's count of the step, against the model's forward multiply-adds
  # (conv 40 -> 19 x 25 ch, k5; 19 -> 10, k3 x 25; 10 -> 5; linear 125 -> 10):
  # a training step is about 3 forward passes, plus elementwise work.
  forward = 2 * (19 * 25 * 5 + 10 * 25 * 75 + 5 * 25 * 75 + 125 * 10)
  batch = config.data.batch_size // summary["devices"]  # step_flops is per device
  assert 2 * forward * batch < summary["step_flops"] < 5 * forward * batch
  assert summary["flop_s"] == pytest.approx(
      summary["step_flops"] * summary["devices"] * summary["examples_per_s"]
      / config.data.batch_size, rel=1e-6)
  with open(tmp_path / "summary.json") as f:
    assert json.load(f)["compile_s"] == summary["compile_s"]


def test_compilation_cache_is_written_and_read_by_the_next_process(tmp_path):
  cache = tmp_path / "jax_cache"
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_ENABLE_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR",
                              "JAX_PERSISTENT_CACHE"))}

  def run():
    out = subprocess.run([sys.executable, "-c", CHILD, str(cache)], env=env,
                         cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

  first = run()
  assert first["dir"] == str(cache)
  assert first["min_compile_s"] == 0 and first["min_bytes"] == -1
  assert first["hits"] == 0 and os.listdir(cache)  # small programs kept too
  assert run()["hits"] >= 1


def test_compilation_cache_dir_is_on_by_default_and_safe_to_change_on_resume():
  default = config_lib.default_config()
  assert default.train.compilation_cache_dir
  changed = config_lib.default_config()
  changed.train.compilation_cache_dir = ""
  unsafe, safe = config_lib.resume_differences(default, changed)
  assert not unsafe and len(safe) == 1


def test_a_cut_last_record_is_skipped_and_dropped_on_resume(tmp_path):
  """A process killed mid-write (or a reader racing the writer) leaves a last line
  without its newline: readers skip it, and truncate_after removes it."""
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write(1, "train", {"loss": 2.0})
  writer.write(2, "train", {"loss": 1.5})
  writer.close()
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 3, "split": "train", "time": 1795356038.8, "lo')
  assert [r["step"] for r in metrics.read_records(str(path))] == [1, 2]
  metrics.MetricWriter(str(tmp_path)).truncate_after(2)
  assert path.read_text().endswith("\n")
  assert [r["step"] for r in metrics.read_records(str(path), "train")] == [1, 2]
