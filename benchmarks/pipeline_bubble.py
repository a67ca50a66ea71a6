"""Pipeline bubble and activation memory: GPipe vs 1F1B on p = 4 stages.

For m micro-batches on p stages the bubble is (p - 1) / (m + p - 1) (Huang
et al., GPipe, 2019); 1F1B (Narayanan et al., 2021) bounds the activations a
stage keeps by O(p) where GPipe keeps m. For each schedule and m this reports
the timetable the compiled step runs (deeplearn.parallel.pipeline.schedule:
ticks, idle share of the stages' time with a backward costing 1 and 3
forwards, ticks in lockstep), the theory, the stash slots, the compiled
step's temporary memory per device (XLA memory analysis) and its wall time.

Wall time on simulated CPU devices does not show the bubble: the 4 "devices"
are threads sharing the machine's cores, so an idle stage lends its core to a
busy one, and step time tracks total work, not the critical path. The
timetable's accounting is the bubble an accelerator per stage would see.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \\
    python benchmarks/pipeline_bubble.py [--microbatches 1,2,4,8,16]
"""

import argparse
import os
import time

import jax
import ml_collections
import numpy as np

from deeplearn import config as config_lib, step as step_lib
from deeplearn.schemes import supervised
from deeplearn.parallel import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = 4


def measure(schedule, m, per_micro, data_dir, steps=5):
  config = config_lib.from_file(os.path.join(
      ROOT, "experiments", "shakespeare_transformer_pipeline.py:tiny"))
  config.data.data_dir = data_dir
  config.mesh = ml_collections.ConfigDict({"stage": STAGES})
  config.train.update(pipeline_schedule=schedule, microbatches=m)
  config.data.batch_size = m * per_micro  # fixed micro-batch size
  run = supervised.build(config, devices=jax.devices()[:STAGES])
  step = pipeline.make_pipeline_train_step(run)
  tokens = jax.ShapeDtypeStruct((config.data.batch_size, config.data.seq_len),
                                np.int32, sharding=run.batch_sharding)
  t0 = time.perf_counter()
  compiled = step.lower(step_lib.abstract_state(run),
                        {"inputs": tokens, "targets": tokens}).compile()
  compile_s = time.perf_counter() - t0
  rng = np.random.default_rng(0)
  batch = jax.device_put({k: rng.integers(0, 65, tokens.shape).astype(np.int32)
                          for k in ("inputs", "targets")}, run.batch_sharding)
  state = run.init_fn(config.train.seed)
  times = []
  for _ in range(steps + 1):  # the first call warms up
    t0 = time.perf_counter()
    state, metrics, _ = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  fwd, bwd = pipeline.schedule(schedule, STAGES, m)
  return {"schedule": schedule, "m": m, "ticks": len(fwd),
          "bubble": pipeline.bubble_fraction(fwd, bwd),
          "bubble_b3": pipeline.bubble_fraction(fwd, bwd, backward_cost=3.0),
          "theory": (STAGES - 1) / (m + STAGES - 1),
          "slots": pipeline.buffer_slots(fwd, bwd),
          "temp_kib": compiled.memory_analysis().temp_size_in_bytes / 1024,
          "step_ms": 1000 * float(np.median(times[1:])),
          "compile_s": compile_s}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--microbatches", default="1,2,4,8,16")
  parser.add_argument("--per_micro", type=int, default=4,
                      help="sequences per micro-batch")
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args()
  print(f"p = {STAGES} stages, {args.per_micro} x 32 tokens per micro-batch,"
        f" {jax.device_count()} {jax.devices()[0].platform} devices")
  print("| schedule | m | ticks | bubble, B = F | bubble, B = 3F |"
        " (p-1)/(m+p-1) | stash slots | temp memory / device | step time |")
  print("|---|---|---|---|---|---|---|---|---|")
  for schedule in pipeline.SCHEDULES:
    for m in map(int, args.microbatches.split(",")):
      r = measure(schedule, m, args.per_micro, args.data_dir)
      print(f"| {r['schedule']} | {r['m']} | {r['ticks']} | {r['bubble']:.3f} |"
            f" {r['bubble_b3']:.3f} | {r['theory']:.3f} | {r['slots']} | {r['temp_kib']:,.0f} KiB |"
            f" {r['step_ms']:.0f} ms |", flush=True)


if __name__ == "__main__":
  main()
