"""Where a train step's time goes on XLA:CPU: per-op time from a jax.profiler trace.

Compiles the experiment's train step, runs it a few times, traces `--steps` more
with XLA:CPU's per-thunk trace events on (`--xla_cpu_enable_xprof_traceme`), and
sums the events by op name with xprof (`pip install -e '.[bench]'`), numbered
suffixes dropped: `ynn_fusion` / `dot` are matmuls (YNNPACK / Eigen), `*_fusion`
elementwise and reduction fusions named after their ops. Event times are summed
over XLA's threads, so the total can exceed the step's wall time. mnist reads TFDS
mnist, here `tfds.testing.mock_data`.

  python benchmarks/profile_step.py --config experiments/shakespeare_char_transformer.py
"""

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_enable_xprof_traceme=true")

import argparse  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from xprof.convert import raw_to_tool_data  # noqa: E402

from deeplearn import config as config_lib, data, step as step_lib  # noqa: E402
from deeplearn.schemes import supervised

# Host-side bookkeeping events, not ops.
NOT_OPS = ("ThreadpoolListener", "ThunkExecutor", "$", "SlinkyThreadPool", "PjitFunction",
           "CommonPjRtLoadedExecutable")


def op_times(trace_dir: str, steps: int) -> collections.Counter:
  """Microseconds per step by op name (numbered suffixes dropped)."""
  paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  tool_data, _ = raw_to_tool_data.xspace_to_tool_data(paths, "trace_viewer", {})
  events = json.loads(tool_data)
  events = events["traceEvents"] if isinstance(events, dict) else events
  times = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(NOT_OPS):
      times[re.sub(r"\.\d+$", "", e["name"])] += e.get("dur", 0) / steps
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="Experiment file[:variant].")
  parser.add_argument("--batch_size", type=int, default=0, help="0: the experiment's.")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--top", type=int, default=15)
  args = parser.parse_args()
  config = config_lib.from_file(args.config)
  if args.batch_size:
    config.data.batch_size = args.batch_size
  mock = (tfds.testing.mock_data(num_examples=2000) if config.data.dataset == "mnist"
          else contextlib.nullcontext())
  with mock:
    run = supervised.build(config)
    batch = next(iter(data.train_dataset(config.data, seed=0, process_index=0,
                                         process_count=1)))
  step = step_lib.make_train_step(run)
  state = run.init_fn(config.train.seed)
  for _ in range(3):  # compile, warm up
    state, _, _ = step(state, batch)
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(args.steps):
    state, _, _ = step(state, batch)
  jax.block_until_ready(state)
  wall = (time.perf_counter() - t0) / args.steps
  trace_dir = tempfile.mkdtemp(prefix="profile_step_")
  jax.profiler.start_trace(trace_dir)
  for _ in range(args.steps):
    state, _, _ = step(state, batch)
  jax.block_until_ready(state)
  jax.profiler.stop_trace()
  times = op_times(trace_dir, args.steps)
  total = sum(times.values())
  matmul = sum(t for name, t in times.items() if name.startswith(("ynn_fusion", "dot")))
  print(f"{args.config} batch {config.data.batch_size}: {1e3 * wall:.2f} ms per step "
        f"untraced; op events {total / 1e3:.2f} ms per step (summed over threads), of "
        f"which matmuls (ynn_fusion, dot) {matmul / 1e3:.2f} ms = {100 * matmul / total:.1f}%",
        file=sys.stderr)
  print("| op | ms per step | share |\n|---|---|---|")
  for name, t in times.most_common(args.top):
    print(f"| {name} | {t / 1e3:.2f} | {100 * t / total:.1f}% |")


if __name__ == "__main__":
  main()
