"""Asynchronous and local SGD on MNIST-1D: the lectures' claims in numbers.

(a) Stale gradients, W_{t+1} = W_t - a g(W_{t-k}): steps to a target test
    accuracy for k in {0, 1, 2, 4, 8, 16}, at the synchronous learning rate
    and at a / (k + 1).
(b) N replicas at a fixed per-replica batch: synchronous (one step averages
    N gradients) and asynchronous (each update applies one worker's gradient,
    N - 1 updates old: round-robin Downpour / Hogwild); speedup over one
    replica in gradient-computation times, and per replica.
(c) Communication bytes per step and device, from the compiled HLO of the
    8-device steps: synchronous SGD vs local SGD with H in {1, 4, 16}.
(d) Local SGD / DiLoCo on 8 replicas: test accuracy after a fixed number of
    steps for H in {1, 4, 16}.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
    python benchmarks/async_sgd.py [--parts abcd] [--max_steps 3000]

Models: the MNIST-1D CNN recipe (experiments/mnist1d_cnn.py) with plain SGD.
Runs (a), (b) on one device (the delay is a property of the optimizer, not
of the devices); (c), (d) on 8 simulated devices.
"""

import argparse
import os
import tempfile
import time

from absl import logging
import jax

from deeplearn import config as config_lib, data, loop, metrics, step as step_lib, train
from deeplearn.schemes import supervised
from deeplearn.parallel import data_parallel, local_sgd, sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR = 0.3  # plain SGD, batch 32: 80% in 900 steps (lr 0.1: 1,800)
BATCH = 32


def base_config(batch=BATCH, lr=LR):
  config = config_lib.from_file(os.path.join(ROOT, "experiments",
                                             "mnist1d_cnn.py"))
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = lr
  config.data.batch_size = batch
  config.train.progress = False
  return config


_EVAL = {}


def steps_to_target(config, target, max_steps, eval_every=100, devices=None):
  """(first step whose test accuracy >= target or None, final accuracy)."""
  config.train.num_steps = max_steps
  run = supervised.build(config, devices)
  if config.train.step_form == "local_sgd":
    step = data_parallel.make_local_sgd_train_step(run)
  else:
    step = step_lib.make_train_step(run)
  if "accuracy" not in _EVAL:  # one compiled evaluation for every run
    task = run.task
    _EVAL["accuracy"] = jax.jit(lambda params, model_state, batch: task.finalize(
        task.eval_sums(params, model_state, batch))["accuracy"])
    _EVAL["test"], = data.eval_dataset(config.data, process_index=0,
                                       process_count=1)  # all 1,000 examples
  batches = iter(data.train_dataset(config.data, seed=config.train.seed,
                                    process_index=0, process_count=1))
  state = run.init_fn(config.train.seed)
  accuracy = 0.0
  for i in range(1, max_steps + 1):
    state, _, _ = step(state, sharding.global_batch(next(batches),
                                                    run.batch_sharding))
    if i % eval_every == 0:
      accuracy = float(_EVAL["accuracy"](state.params, state.model_state,
                                         _EVAL["test"]))
      if accuracy >= target:
        return i, accuracy
  return None, accuracy


def shown(steps):
  return f"{steps:,}" if steps else "not reached"


def staleness_table(args):
  print(f"\n(a) steps to {args.target:.0%} test accuracy vs staleness k"
        f" (SGD, batch {BATCH}, at most {args.max_steps:,} steps)\n")
  print(f"| k | lr {LR} (synchronous) | lr {LR} / (k + 1) |")
  print("|---|---|---|")
  one = jax.devices()[:1]
  for k in (0, 1, 2, 4, 8, 16):
    row = []
    for lr in (LR, LR / (k + 1)):
      config = base_config(lr=lr)
      config.optimizer.staleness = k
      steps, acc = steps_to_target(config, args.target, args.max_steps,
                                   devices=one)
      row.append(f"{shown(steps)} ({acc:.1%})")
    print(f"| {k} | {row[0]} | {row[1]} |", flush=True)


def replicas_table(args):
  print(f"\n(b) N replicas, batch {BATCH} each: steps to {args.target:.0%};"
        " speedup over N = 1 in gradient times (sync: a step is one gradient"
        " time; async: N updates are)\n")
  print("| N | sync steps | sync speedup (per replica) | async (k = N - 1)"
        " updates | async speedup (per replica) |")
  print("|---|---|---|---|---|")
  one = jax.devices()[:1]
  base = None
  for n in (1, 2, 4, 8):
    sync, _ = steps_to_target(base_config(batch=BATCH * n), args.target,
                              args.max_steps, devices=one)
    config = base_config()
    config.optimizer.staleness = n - 1
    updates, _ = steps_to_target(config, args.target, args.max_steps,
                                 devices=one)
    base = base or sync
    cells = []
    for steps, times in ((sync, sync), (updates, updates and updates / n)):
      speed = base / times if times else None
      cells += [shown(steps), f"{speed:.2f} ({speed / n:.2f})" if speed
                else "-"]
    print(f"| {n} | " + " | ".join(cells) + " |", flush=True)


def bytes_table(args):
  del args
  print("\n(c) collective bytes per step and device (non-scalar; from the"
        " compiled HLO, 8 devices)\n")
  print("| step | every step | per sync | per step | vs synchronous |")
  print("|---|---|---|---|---|")
  sync_bytes = None
  for name, form, h in (("synchronous (jit)", "jit", 1),
                        ("local SGD H=1", "local_sgd", 1),
                        ("local SGD H=4", "local_sgd", 4),
                        ("local SGD H=16", "local_sgd", 16)):
    config = base_config(batch=BATCH * 8)
    config.train.num_steps = 100
    config.train.step_form, config.train.local_steps = form, h
    run = supervised.build(config)
    step = (data_parallel.make_local_sgd_train_step(run) if form == "local_sgd"
            else step_lib.make_train_step(run))
    batch = next(iter(data.train_dataset(config.data, seed=0, process_index=0,
                                         process_count=1)))
    hlo = step.lower(run.init_fn(0), sharding.global_batch(
        batch, run.batch_sharding)).compile().as_text()
    got = local_sgd.bytes_per_step(hlo, h)
    sync_bytes = sync_bytes or got["per_step"]
    print(f"| {name} | {got['every_step']:,} | {got['sync']:,} |"
          f" {got['per_step']:,.0f} | 1/{sync_bytes / got['per_step']:.0f} |",
          flush=True)


def local_table(args):
  print(f"\n(d) local SGD on 8 replicas (batch {BATCH} each, SGD lr {LR}):"
        f" steps to {args.target:.0%}, accuracy after {args.local_steps:,}"
        " steps (through train.train_and_evaluate)\n")
  print("| H | outer (lr) | steps to target | final accuracy | best | wall s |")
  print("|---|---|---|---|---|---|")
  parent = tempfile.mkdtemp(prefix="local_sgd_")
  for h, outer, outer_lr in ((1, "average", 1), (4, "average", 1),
                             (16, "average", 1), (16, "nesterov", 0.7),
                             (16, "nesterov", 0.35)):
    config = base_config(batch=BATCH * 8)
    config.train.step_form, config.train.local_steps = "local_sgd", h
    config.train.outer_optimizer = outer
    config.train.outer_learning_rate = outer_lr
    config.train.num_steps = args.local_steps
    config.train.eval_every = config.train.log_every = 100
    config.train.checkpoint_every = args.local_steps
    workdir = os.path.join(parent, f"h{h}_{outer}")
    try:
      summary = train.train_and_evaluate(config, workdir)
    except loop.NonFiniteError as e:
      print(f"| {h} | {outer} ({outer_lr}) | diverged: {str(e)[:34]} |"
            " | | |", flush=True)
      continue
    evals = metrics.read_records(os.path.join(workdir, "metrics.jsonl"),
                                 "eval")
    steps = next((r["step"] for r in evals if r["accuracy"] >= args.target),
                 None)
    print(f"| {h} | {outer} ({outer_lr}) | {shown(steps)} |"
          f" {summary['final']['accuracy']:.1%} |"
          f" {summary['best']['value']:.1%} | {summary['wall_s']:.0f} |",
          flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", default="abcd")
  parser.add_argument("--target", type=float, default=0.8)
  parser.add_argument("--max_steps", type=int, default=3000)
  parser.add_argument("--local_steps", type=int, default=1000)
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  print(f"{jax.device_count()} devices; MNIST-1D CNN; SGD")
  for part, table in zip("abcd", (staleness_table, replicas_table,
                                  bytes_table, local_table)):
    if part in args.parts:
      start = time.time()
      table(args)
      print(f"\n({part}: {time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
  main()
