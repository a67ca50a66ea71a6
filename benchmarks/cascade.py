"""Cascades on digits: accuracy against average FLOPs, the operating point, and real wall time.

Trains, per seed, through the ordinary loop (`python -m deeplearn.train`'s code
path): `digits_cascade` (logistic regression -> MLP -> convnet), `digits_early_exit`
(three exits of one convnet) and `digits_canvas_cascade` (the detection cascade
over 8x8 windows of 32x32 canvases). Each run's last evaluation calibrates the
thresholds on its validation split and applies them to the test split
(WORKDIR/cascade.json); this script tabulates those, plots every threshold
combination's test accuracy against average FLOPs per example (the first seed;
cascade_curve.png, in benchmarks/figures/ if that folder exists), and times, on
the same test batch and with the chosen thresholds, alternating, three repeats,
medians:

  dense    every stage on every example, then each example's first exit
  compact  the cascade as deeplearn.models.cascade.compact_predict runs it: stage k
           only on buckets of the examples no earlier stage answered
  last     the last stage alone on every example (the model without a cascade)

  python benchmarks/cascade.py [--seeds 0,1,2] [--out /tmp/cascade_results.md]
"""

import argparse
import datetime
import functools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from deeplearn import checkpoint, config as config_lib, schemes, train
from deeplearn.models import cascade as staged
from deeplearn.tasks import cascade as cascade_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = ("digits_cascade", "digits_early_exit", "digits_canvas_cascade")
CALLS = 10  # calls per timing, of which the median
MIN_BATCH = 4096  # examples per timed call, at least


def trained(name, seed, parent, data_dir, variant=""):
  """Trains `name` with `seed`: (scheme, restored state, cascade.json, wall seconds)."""
  spec = os.path.join(ROOT, "experiments", f"{name}.py") + (f":{variant}" if variant else "")
  config = config_lib.from_file(spec)
  config.train.seed = seed
  config.train.progress = False
  if data_dir:
    config.data.data_dir = data_dir
  workdir = os.path.join(parent, f"{name}_seed{seed}")
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.time()
  train.train_and_evaluate(config, workdir)
  seconds = time.time() - start
  scheme = schemes.get_scheme(config)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  state, _ = ckpt.restore_latest(scheme.abstract_state())
  ckpt.close()
  with open(os.path.join(workdir, "cascade.json")) as f:
    report = json.load(f)
  return scheme, state, report, seconds


def test_inputs(scheme, bucket):
  """The eval split's inputs, repeated to at least MIN_BATCH (digits' 360 would time
  mostly the call's overhead), cut to a multiple of the bucket: [N, ...]."""
  batches = scheme._eval_ds  # pylint: disable=protected-access
  xs = np.concatenate([b["inputs"][b["mask"] > 0] for b in batches])
  xs = np.concatenate([xs] * -(-MIN_BATCH // len(xs)))
  return jnp.asarray(xs[:len(xs) // bucket * bucket])


def wall_times(scheme, state, thresholds):
  """Median seconds per call on the test inputs of dense, compact and last, and of
  each stage alone on every example (`stage<k>`, from its carry); and the batch."""
  model, s = scheme.run.task.model, scheme.settings
  variables = {"params": state.params, **state.model_state}
  x = test_inputs(scheme, s.bucket_size)
  t = jnp.asarray(thresholds, jnp.float32)
  fns = {
      "dense": jax.jit(lambda v, x, t: staged.dense_predict(model, v, x, t, s.reject_class)),
      "compact": jax.jit(lambda v, x, t: staged.compact_predict(
          model, v, x, t, bucket=s.bucket_size, reject_class=s.reject_class)),
      "last": jax.jit(lambda v, x, t: jnp.argmax(model.apply(v, x, method="final"), -1)),
  }
  calls = {k: functools.partial(f, variables, x, t) for k, f in fns.items()}
  carry = x
  for k in range(model.num_stages):
    stage = jax.jit(lambda v, c, k=k: model.apply(v, k, c, method="stage"))
    calls[f"stage{k}"] = functools.partial(stage, variables, carry)
    carry = stage(variables, carry)[1]
  dense, compact = calls["dense"](), calls["compact"]()
  assert all(np.array_equal(a, b) for a, b in zip(dense, compact))  # the same answers
  for call in calls.values():
    jax.block_until_ready(call())
  times = {k: [] for k in calls}
  for _ in range(3):  # alternating, so that a busy machine slows all of them alike
    for k, call in calls.items():
      per_call = []
      for _ in range(CALLS):
        start = time.perf_counter()
        jax.block_until_ready(call())
        per_call.append(time.perf_counter() - start)
      times[k].append(float(np.median(per_call)))
  return {k: float(np.median(v)) for k, v in times.items()}, len(x)


def plot(reports, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(reports), figsize=(5 * len(reports), 4))
  for ax, (name, report) in zip(np.atleast_1d(axes), reports.items()):
    points = report["points"]
    key = "target" if name == "digits_canvas_cascade" else "accuracy"
    flops = [p["flops"] for p in points]
    ax.scatter(flops, [p[key] for p in points], s=8, alpha=0.4, label="threshold combinations")
    front = cascade_lib.pareto([{"flops": p["flops"], "accuracy": p[key]} for p in points])
    ax.plot([p["flops"] for p in front], [p["accuracy"] for p in front], "-", label="Pareto front")
    m = report["metrics"]
    chosen = m["cascade_recall"] if key == "target" else m["cascade_accuracy"]
    last = m["recall"] if key == "target" else m["accuracy"]
    ax.scatter([m["cascade_flops"]], [chosen], c="red", marker="*", s=150, zorder=3,
               label="calibrated on validation")
    ax.scatter([m["baseline_flops"]], [last], c="black", marker="s", zorder=3,
               label="last stage alone")
    ax.set_xscale("log")
    ax.set_xlabel("average XLA FLOPs per example (test)")
    ax.set_ylabel("digit recall (test)" if key == "target" else "accuracy (test)")
    ax.set_title(name)
    ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def cpu_seconds():
  """User + system CPU seconds of this process so far (the runs train in-process)."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def mean_row(rows, width):
  cols = list(zip(*rows))
  return ["**mean**"] + [f"**{np.mean(c):.4g}**" if isinstance(c[0], float) else ""
                         for c in cols[1:width]]


def table(header, rows):
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    lines.append("| " + " | ".join(v if isinstance(v, str) else f"{v:.4g}" for v in r) + " |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--workdir", default=None, help="Parent of the runs (default: temp).")
  parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: TFDS's).")
  parser.add_argument("--out", default="/tmp/cascade_results.md")
  parser.add_argument("--experiments", default=",".join(EXPERIMENTS))
  parser.add_argument("--variant", default="", help="e.g. tiny: a smoke run of this script.")
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  parent = args.workdir or tempfile.mkdtemp(prefix="cascade_bench_")
  seeds = [int(s) for s in args.seeds.split(",")]
  started = time.time()
  results, first = {}, {}
  for name in args.experiments.split(","):
    for seed in seeds:
      scheme, state, report, seconds = trained(name, seed, parent, args.data_dir, args.variant)
      times, n = wall_times(scheme, state, report["chosen"]["thresholds"])
      results.setdefault(name, []).append((seed, report, times, n, seconds))
      first.setdefault(name, report)
      m = report["metrics"]
      print(f"{name} seed {seed}: {seconds:.1f} s, accuracy {m['accuracy']:.4f} cascade"
            f" {m['cascade_accuracy']:.4f} at {m['cascade_flops']:.0f} /"
            f" {m['baseline_flops']:.0f} FLOPs; dense {times['dense'] * 1e3:.2f} ms, compact"
            f" {times['compact'] * 1e3:.2f} ms, last {times['last'] * 1e3:.2f} ms", flush=True)

  figures = os.path.join(ROOT, "benchmarks", "figures")
  png = os.path.join(figures if os.path.isdir(figures) else os.path.join(ROOT, "benchmarks"),
                     "cascade_curve.png")
  plot(first, png)

  model_name = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                              text=True, check=False).stdout.split(":")[-1].strip()
  out = [f"# Cascades (measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)", "",
         f"`python {' '.join(sys.argv)}`: {model_name}, {os.cpu_count()}"
         f" vCPU, Python {platform.python_version()}, jax {jax.__version__}; the machine was"
         f" shared with other jobs (load average {os.getloadavg()[0]:.1f} at the end). Total"
         f" {time.time() - started:.0f} s wall, {cpu_seconds():.0f} s CPU. Curve:"
         f" {os.path.relpath(png, ROOT)}.",
         ""]
  for name in [n for n in ("digits_cascade", "digits_early_exit") if n in results]:
    rows = []
    for seed, r, _, _, seconds in results[name]:
      m = r["metrics"]
      stages = [m[f"stage{k}_accuracy"] for k in range(len(r["stage_flops"]))]
      rows.append([str(seed), *stages, m["cascade_accuracy"], m["cascade_flops"],
                   m["baseline_flops"], 100 * m["flops_saved"],
                   ", ".join(f"{t:g}" for t in r["chosen"]["thresholds"]),
                   ", ".join(f"{m[f'exit{k}_fraction']:.2f}" for k in range(len(stages))),
                   seconds])
    k = len(r["stage_flops"])
    header = (["seed", *[f"stage {i} acc" for i in range(k)], "cascade acc",
               "cascade FLOPs/ex", "last stage FLOPs/ex", "saved %",
               "thresholds (2 = never)", "answered per stage", "train+eval s"])
    out += [f"## {name}", "", "Stage FLOPs per example (XLA): "
            + ", ".join(f"{f:,.0f}" for f in r["stage_flops"]) + ".", "",
            table(header, rows + [mean_row(rows, len(header) - 3) + ["", "", ""]]), ""]
  if "digits_canvas_cascade" in results:
    rows = []
    for seed, r, _, _, seconds in results["digits_canvas_cascade"]:
      m = r["metrics"]
      f = [m[f"exit{k}_fraction"] for k in range(len(r["stage_flops"]))]
      rows.append([str(seed), 100 * f[0], 100 * f[1], 100 * f[2], 100 * m["flops_saved"],
                   100 * m["recall"], 100 * m["cascade_recall"],
                   100 * m["canvas_accuracy"], 100 * m["cascade_canvas_accuracy"],
                   100 * m["accuracy"], 100 * m["cascade_accuracy"], seconds])
    header = ["seed", "% windows rejected by stage 0", "% rejected by stage 1",
              "% reaching stage 2", "compute saved % (vs convnet everywhere)",
              "digit recall % convnet", "digit recall % cascade", "canvases read % convnet",
              "canvases read % cascade", "window acc % convnet", "window acc % cascade",
              "train+eval s"]
    r0 = results["digits_canvas_cascade"][0][1]
    out += ["## digits_canvas_cascade (detection)", "",
            "Stage FLOPs per window (XLA): " + ", ".join(f"{f:,.0f}" for f in r0["stage_flops"])
            + f"; {len(results['digits_canvas_cascade'][0][1]['points'])} threshold"
            " combinations; a canvas is read when all 169 of its windows are right.", "",
            table(header, rows + [mean_row(rows, len(header))]), ""]
  rows = []
  for name, runs in results.items():
    for seed, r, times, n, _ in runs:
      rows.append([name, str(seed), str(n), times["dense"] * 1e3, times["compact"] * 1e3,
                   times["last"] * 1e3, times["dense"] / times["compact"],
                   times["last"] / times["compact"],
                   100 * (1 - r["metrics"]["cascade_flops"] / r["metrics"]["baseline_flops"])])
  out += ["## Wall time of cascaded inference (test batch, chosen thresholds)", "",
          f"Batch: the test split (digits: repeated to at least {MIN_BATCH:,} examples)."
          f" Median of {CALLS} calls, three alternating repeats, median of those; `dense`: every"
          " stage on every example then select; `compact`: survivors sorted into buckets of"
          " 32, stage k on the occupied buckets only; `last`: the last stage alone.", "",
          table(["experiment", "seed", "batch", "dense ms", "compact ms", "last ms",
                 "dense / compact", "last / compact", "FLOPs saved % vs last"], rows), ""]
  rows = []
  for name, runs in results.items():
    _, r, times, n, _ = runs[0]
    rows.append([name, str(n), *[f"{times[f'stage{k}'] * 1e3:.3g} ms ({f:,.0f})"
                                 for k, f in enumerate(r["stage_flops"])],
                 f"{times['last'] * 1e3:.3g} ms ({r['metrics']['baseline_flops']:,.0f})"])
  out += ["## Each stage alone on every example (first seed): wall time (FLOPs per example)",
          "", "The same batches and protocol; stage k runs from its carry (the input, or for"
          " early exit the previous block's features).", "",
          table(["experiment", "batch", "stage 0", "stage 1", "stage 2", "last alone"], rows), ""]
  text = "\n".join(out)
  print(text)
  with open(args.out, "w") as f:
    f.write(text + "\n")


if __name__ == "__main__":
  main()
