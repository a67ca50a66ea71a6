"""Knowledge distillation (Hinton et al. 2015) on MNIST-1D and digits, measured.

For each dataset and seed: the teacher (mnist1d_cnn / digits_convnet), the
student trained alone, and the student distilled from that seed's teacher
(experiments/mnist1d_distill.py, digits_distill.py: the teacher's forward pass
inside the student's step); a sweep over the temperature T; and the paper's
transfer-set experiment: the student distilled with no examples of one class
(train[:90%] of the train split as transfer set, its last 10% as the
validation split that chooses the bias correction), its test accuracy on that
class before and after raising the class's output bias by the chosen constant.
Every run goes through `deeplearn.train.train_and_evaluate`, as the CLI does.
Prints markdown tables; `--out FILE` also writes them there.

  python benchmarks/distill.py [--seeds 0,1,2] [--sweep_seeds 0] [--out results.md]
"""

import argparse
import os
import platform
import subprocess
import time

from absl import logging
import numpy as np

from deeplearn import config as config_lib, train
from deeplearn.schemes import supervised
from deeplearn.tasks import distillation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> (teacher experiment, student experiment, transfer split, validation split)
DATASETS = {
    "mnist1d": ("mnist1d_cnn", "mnist1d_distill", "train[:3600]", "train[3600:]"),
    "digits": ("digits_convnet", "digits_distill", "train[:1293]", "train[1293:]"),
}
OMIT = 3  # the paper left out the 3s
SHIFTS = np.arange(0.0, 30.01, 0.25)


def config_of(name, data_dir, seed, **distill):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", f"{name}.py"))
  with config.unlocked():
    config.train.seed = seed
    config.train.progress = False
    if data_dir:
      config.data.data_dir = data_dir
    if "distill" in config:
      config.distill.update(distill)
  return config


def run(config, workdir):
  summary = train.train_and_evaluate(config, workdir)
  return {"accuracy": 100 * summary["final"]["accuracy"], "wall_s": summary["wall_s"],
          "params": summary.get("num_params")}


def mean_std(values):
  values = np.asarray(values, np.float64)
  return f"{values.mean():.1f} ± {values.std():.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def class_accuracy(logits, labels, cls, shift=0.0):
  z = np.array(logits, np.float64)
  z[:, cls] += shift
  pred = z.argmax(1)
  return 100 * np.mean(pred == labels), 100 * np.mean(pred[labels == cls] == cls)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/distill_bench")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--sweep_seeds", default="0")
  parser.add_argument("--temperatures", default="1,2,4,8,20")
  parser.add_argument("--only", default="", help="mnist1d and/or digits")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  seeds = [int(s) for s in args.seeds.split(",")]
  sweep_seeds = [int(s) for s in args.sweep_seeds.split(",")]
  temperatures = [float(t) for t in args.temperatures.split(",")]
  data_dir = args.data_dir or os.path.join(args.workdir, "tfds")
  start = time.time()
  lines = []
  for dataset, (teacher_name, student_name, transfer, validation) in DATASETS.items():
    if args.only and dataset not in args.only.split(","):
      continue
    t0 = time.time()
    w = lambda *parts: os.path.join(args.workdir, "_".join([dataset, *map(str, parts)]))
    rows = {"teacher": [], "student alone": [], "distilled": []}
    default_t = config_of(student_name, data_dir, 0).distill.temperature
    alpha = config_of(student_name, data_dir, 0).distill.alpha
    sweep = {t: [] for t in temperatures}
    transfer_rows = []
    for seed in seeds:
      teacher_dir = w("teacher_seed", seed)
      rows["teacher"].append(run(config_of(teacher_name, data_dir, seed), teacher_dir))
      rows["student alone"].append(run(config_of(
          student_name, data_dir, seed, teacher_workdir=""), w("alone_seed", seed)))
      rows["distilled"].append(run(config_of(
          student_name, data_dir, seed, teacher_workdir=teacher_dir),
          w("distilled_seed", seed)))
      if seed in sweep_seeds:
        for t in temperatures:
          if t == default_t:
            sweep[t].append(rows["distilled"][-1])
            continue
          sweep[t].append(run(config_of(
              student_name, data_dir, seed, teacher_workdir=teacher_dir,
              temperature=t), w("T", t, "seed", seed)))
      config = config_of(student_name, data_dir, seed, teacher_workdir=teacher_dir,
                         omit_class=OMIT)
      with config.unlocked():
        config.data.train_split = transfer
      omit_dir = w("omit", OMIT, "seed", seed)
      result = run(config, omit_dir)
      finished = supervised.load_finished(omit_dir)
      val_logits, val_labels = supervised.split_logits(finished, validation)
      shift, _ = distillation.best_bias_shift(val_logits, val_labels, OMIT, SHIFTS)
      test_logits, test_labels = supervised.split_logits(finished, "test")
      before = class_accuracy(test_logits, test_labels, OMIT)
      after = class_accuracy(test_logits, test_labels, OMIT, shift)
      transfer_rows.append((seed, before, shift, after, int(np.sum(test_labels == OMIT)),
                            result["wall_s"]))
    lines += [f"\n### {dataset}: {teacher_name} teaches {student_name}"
              f" (T = {default_t:g}, alpha = {alpha:g}), seeds {args.seeds}\n",
              "| model | params | test accuracy % (per seed) | mean ± std | wall s per run |",
              "|---|---|---|---|---|"]
    for name, results in rows.items():
      accs = [r["accuracy"] for r in results]
      lines.append(f"| {name} | {results[0]['params']:,} |"
                   f" {', '.join(f'{a:.1f}' for a in accs)} | {mean_std(accs)} |"
                   f" {np.mean([r['wall_s'] for r in results]):.1f} |")
    lines += [f"\nTemperature sweep (alpha = {alpha:g}), seeds {args.sweep_seeds}:\n",
              "| T | distilled student test accuracy % |", "|---|---|"]
    for t, results in sweep.items():
      lines.append(f"| {t:g} | {mean_std([r['accuracy'] for r in results])} |")
    lines += [f"\nTransfer set without the {OMIT}s ({transfer} of the train split;"
              f" the bias shift chosen on {validation} from {SHIFTS[0]:g} to"
              f" {SHIFTS[-1]:g} in steps of {SHIFTS[1] - SHIFTS[0]:g}), test split:\n",
              f"| seed | test accuracy % | accuracy on the {OMIT}s % | bias shift |"
              f" test accuracy % after | accuracy on the {OMIT}s % after | wall s |",
              "|---|---|---|---|---|---|---|"]
    for seed, before, shift, after, count, wall in transfer_rows:
      lines.append(f"| {seed} | {before[0]:.1f} | {before[1]:.1f} (of {count}) |"
                   f" +{shift:g} | {after[0]:.1f} | {after[1]:.1f} | {wall:.1f} |")
    lines.append(f"\n{dataset}: {time.time() - t0:.0f} s wall for all of the above.")
    print("\n".join(lines[-40:]), flush=True)
  model = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                         text=True, check=False).stdout.split(":")[-1].strip()
  date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
  header = [f"## Knowledge distillation, measured {date}",
            f"\n`python benchmarks/distill.py --seeds {args.seeds} --sweep_seeds"
            f" {args.sweep_seeds}` on {model or platform.processor()}, {os.cpu_count()}"
            f" vCPU, 1 CPU device; {time.time() - start:.0f} s wall in all."]
  text = "\n".join(header + lines) + "\n"
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
