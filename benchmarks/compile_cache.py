"""Compilation: startup with an empty persistent compilation cache vs a warm one.

Each run is a fresh Python process that imports deeplearn and trains the
experiment for a few steps with `config.train.compilation_cache_dir` set
(the default points at ~/.cache/deeplearn/jax_cache; here a new temporary dir
per pair). Pairs run one after the other: cold (empty dir), then warm (the
same dir again). "startup" is process start (the child's first line) to the
first train step done: import + `summary["startup_s"]` (config, dataset,
state init, tracing, compile or cache load, step 1). The dataset is prepared
once beforehand, so neither side pays for it.

  python benchmarks/compile_cache.py [--pairs 2] [--only mnist1d_cnn]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from deeplearn import config as config_lib, data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = ("mnist1d_cnn", "shakespeare_char_transformer")
CHILD = """
import time
t0 = time.time()
import json, sys
from absl import logging
from deeplearn import config as config_lib, train
import_s = time.time() - t0
logging.set_verbosity(logging.WARNING)
config = config_lib.from_file(sys.argv[1])
config.data.data_dir, config.train.compilation_cache_dir = sys.argv[2:4]
config.train.update(num_steps=2, num_epochs=0.0, progress=False)
config.schedule.warmup_steps = 0  # must be under num_steps; same program
s = train.train_and_evaluate(config, sys.argv[4])
print(json.dumps({"import_s": import_s, "startup_s": s["startup_s"],
                  "lower_s": s["lower_s"], "compile_s": s["compile_s"],
                  "wall_s": time.time() - t0}))
"""


def child(spec, data_dir, cache_dir, workdir):
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_ENABLE_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR")}
  env.setdefault("JAX_PLATFORMS", "cpu")
  t0 = time.time()
  out = subprocess.run([sys.executable, "-c", CHILD, spec, data_dir, cache_dir,
                        workdir], env=env, cwd=ROOT, check=True,
                       capture_output=True, text=True).stdout
  result = json.loads(out.strip().splitlines()[-1])
  result["process_s"] = time.time() - t0
  result["first_step_s"] = result["import_s"] + result["startup_s"]
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pairs", type=int, default=2)
  parser.add_argument("--only", default="", help="Comma-separated experiments.")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data dir (default: a temp dir).")
  args = parser.parse_args()
  tmp = tempfile.mkdtemp(prefix="compile_cache_")
  data_dir = args.data_dir or os.path.join(tmp, "tfds")
  rows = []
  for name in EXPERIMENTS:
    if args.only and name not in args.only.split(","):
      continue
    spec = os.path.join(ROOT, "experiments", f"{name}.py")
    config = config_lib.from_file(spec)
    config.data.data_dir = data_dir
    data.get_info(config.data)  # prepares the dataset outside the timing
    runs = {"cold": [], "warm": []}
    for p in range(args.pairs):
      cache = os.path.join(tmp, f"cache_{name}_{p}")
      for side in ("cold", "warm"):
        runs[side].append(child(spec, data_dir, cache,
                                os.path.join(tmp, f"{name}_{p}_{side}")))
        r = runs[side][-1]
        print(f"{name} pair {p} {side}: first step done {r['first_step_s']:.2f} s"
              f" (import {r['import_s']:.2f}, lower {r['lower_s']:.2f}, compile"
              f" {r['compile_s']:.2f}), process {r['process_s']:.2f} s;"
              f" {len(os.listdir(cache))} cache entries; load"
              f" {os.getloadavg()[0]:.1f}", flush=True)
    med = {side: {k: statistics.median(r[k] for r in rs)
                  for k in ("first_step_s", "compile_s", "process_s")}
           for side, rs in runs.items()}
    rows.append((name, med))
  print("\n| experiment | cold: first step / compile / process s |"
        " warm: first step / compile / process s | startup cold / warm |"
        " compile cold / warm |")
  print("|---|---|---|---|---|")
  for name, med in rows:
    c, w = med["cold"], med["warm"]
    print(f"| {name} | {c['first_step_s']:.2f} / {c['compile_s']:.2f} /"
          f" {c['process_s']:.2f} | {w['first_step_s']:.2f} /"
          f" {w['compile_s']:.2f} / {w['process_s']:.2f} |"
          f" {c['first_step_s'] / w['first_step_s']:.2f}x |"
          f" {c['compile_s'] / w['compile_s']:.1f}x |")
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
