"""The one train loop, for every training scheme.

A scheme (deeplearn/schemes/) supplies its state, step, inputs, evaluation
and summary fields; `run` supplies the rest to all of them alike: the
resume check, checkpoints with integrity checks and the input position
(bitwise resume), ahead-of-time compilation and its timing, SIGTERM, the NaN
policy, the progress bar, TensorBoard + metrics.jsonl and summary.json,
one run per workdir (a lock), and files rewritten only atomically.
Each step reads top to bottom: input, step, health, log, eval, save. Metrics
stay on the device until a log interval; the first step is the only other
sync.
"""

import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from deeplearn import checkpoint, config as config_lib, files, hlo, metrics, preemption


class NonFiniteError(FloatingPointError):
  """A NaN or Inf in the loss, gradients or parameters; the step is named."""


@jax.jit
def stack_steps(per_step: list):
  """A log interval's per-step values, one array [steps] per leaf.

  The host then fetches one array per leaf, not one per step and leaf: each
  fetch costs tens of microseconds on a CPU, and at 100 steps per interval
  the separate fetches took about a third as long as MNIST-1D's steps.
  """
  return jax.tree.map(lambda *xs: jnp.stack(xs), *per_step)


def check_health(train_cfg, healths, first_step: int, names, log) -> None:
  """Raises NonFiniteError at the first step the policy does not allow.

  `healths` holds the steps' health values fetched as `stack_steps` stacks
  them: {"finite": [steps], "first_nonfinite": [steps], "streak": [steps]}.
  """
  for i in np.flatnonzero(~np.asarray(healths["finite"])):
    step = first_step + int(i)
    leaf = names[int(healths["first_nonfinite"][i])]
    streak = int(healths["streak"][i])
    if train_cfg.nonfinite == "skip" and streak <= train_cfg.max_nonfinite_skips:
      log(f"step {step}: non-finite {leaf}; update skipped ({streak} in a"
          f" row, at most {train_cfg.max_nonfinite_skips})")
      continue
    why = (f"{streak} non-finite updates in a row, more than"
           f" config.train.max_nonfinite_skips={train_cfg.max_nonfinite_skips}"
           if train_cfg.nonfinite == "skip" else "config.train.nonfinite='stop'")
    raise NonFiniteError(
        f"Non-finite value at step {step}: first in {leaf!r} ({why}). The"
        " newest checkpoint was written before it and is left untouched; lower"
        " the learning rate, clip gradients (config.optimizer.grad_clip_norm),"
        " or set config.train.nonfinite='skip'.")


def use_compilation_cache(cache_dir: str) -> None:
  """Points jax's persistent compilation cache at `cache_dir` ("" = off).

  jax only writes programs that took a second or more to compile; on a CPU
  a small experiment's steps compile faster than that, yet they are most of
  its startup, so every program is kept. A directory already set (the
  --jax_compilation_cache_dir flag, $JAX_COMPILATION_CACHE_DIR, an earlier
  run in this process) is left as it is.
  """
  if not cache_dir or jax.config.jax_compilation_cache_dir:
    return
  jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache_dir))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def compile_step(train_step, state, batch) -> dict[str, float]:
  """Lowers and compiles the step ahead of its first call; the seconds of each.

  The call that follows finds the executable in jax's caches, so nothing is
  compiled twice. With a warm persistent cache, "compile" is the load.
  """
  if not hasattr(train_step, "lower"):
    return {}
  t0 = time.perf_counter()
  lowered = train_step.lower(state, batch)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  out = {"lower_s": t1 - t0, "compile_s": time.perf_counter() - t1}
  try:  # XLA's count, per device; for FLOP/s and utilisation in the summary
    flops = hlo.step_flops(compiled)
  except Exception:  # pylint: disable=broad-except (a backend without cost analysis)
    flops = 0.0
  if flops > 0:
    out["step_flops"] = flops
  return out


@dataclasses.dataclass
class Timer:
  """The loop's time bookkeeping: startup, each log interval's step and
  data-wait seconds, and the timed intervals' totals (the first interval,
  which compiles, is left out of the totals). The totals travel in each
  checkpoint (`totals` / `resume`), so a resumed run's summary counts every
  part of the run, also when only the summary was left to write."""
  t_start: float
  startup: dict = dataclasses.field(default_factory=dict)
  t_interval: float = 0.0
  interval_wait: float = 0.0  # getting inputs, this interval
  train_s: float = 0.0  # timed intervals
  wait_s: float = 0.0
  steps_timed: int = 0
  earlier_wall_s: float = 0.0  # the run's parts before this process

  def totals(self) -> dict:
    """What a checkpoint carries: the totals up to now."""
    return {"wall_s": self.earlier_wall_s + time.time() - self.t_start,
            "train_s": self.train_s, "wait_s": self.wait_s,
            "steps_timed": self.steps_timed}

  def resume(self, totals: dict) -> None:
    """Adds a checkpoint's totals (from an earlier part of the run)."""
    self.earlier_wall_s = float(totals.get("wall_s", 0.0))
    self.train_s = float(totals.get("train_s", 0.0))
    self.wait_s = float(totals.get("wait_s", 0.0))
    self.steps_timed = int(totals.get("steps_timed", 0))

  def next_input(self, get):
    t0 = time.perf_counter()
    out = get()
    self.interval_wait += time.perf_counter() - t0
    return out

  def first_step_done(self) -> str:
    self.startup["startup_s"] = time.time() - self.t_start
    return "startup: " + ", ".join(
        f"{k.removesuffix('_s')} {v:.2f} s" for k, v in self.startup.items()
        if k.endswith("_s")) + " (first step done)"

  def interval(self, steps: int, timed: bool) -> dict[str, float]:
    """Closes a log interval of `steps` steps: its step and wait figures.
    An untimed interval is the first, whose step_s leaves out compilation."""
    interval_s = time.time() - self.t_interval
    busy_s = interval_s
    if timed:
      self.train_s += interval_s
      self.steps_timed += steps
      self.wait_s += self.interval_wait
    else:
      busy_s -= self.startup.get("lower_s", 0.0) + self.startup.get("compile_s", 0.0)
    out = {"data_wait_s": self.interval_wait, "step_s": busy_s / steps,
           "data_wait_fraction": self.interval_wait / interval_s}
    self.interval_wait = 0.0
    return out

  def restart_interval(self) -> None:
    self.t_interval = time.time()

  def figures(self, examples_per_step: int, devices: int) -> dict:
    """summary.json's timing: wall and startup seconds, examples/s, data
    wait and, with XLA's FLOP count, the achieved FLOP/s of all devices
    (over the hardware's peak: the model FLOP utilisation)."""
    out = {"wall_s": self.totals()["wall_s"],
           "examples_per_s": (self.steps_timed * examples_per_step / self.train_s
                              if self.train_s > 0 and examples_per_step else None),
           **self.startup}
    if "step_flops" in out and self.train_s > 0:
      out["flop_s"] = out["step_flops"] * devices * self.steps_timed / self.train_s
    out.update(data_wait_s=self.wait_s,
               data_wait_fraction=(self.wait_s / self.train_s
                                   if self.train_s > 0 else None))
    return out


def _better(value, best, mode):
  return best is None or (value > best if mode == "max" else value < best)


def summarize(scheme, workdir: str, extra: dict) -> dict:
  """Final and best eval metrics, from metrics.jsonl, plus run figures."""
  evals = metrics.read_records(os.path.join(workdir, "metrics.jsonl"), "eval")
  name, mode = scheme.best_metric
  if scheme.config.eval.best_metric:
    name = scheme.config.eval.best_metric
    mode = "min" if "loss" in name or "perplexity" in name else "max"
  best = None
  for record in evals:
    if name in record and _better(record[name], best and best[name], mode):
      best = record
  final = evals[-1] if evals else {}
  return {"final": {k: v for k, v in final.items() if k != "split"},
          "best": {"metric": name, "value": best and best[name],
                   "step": best and best["step"]},
          "steps": scheme.num_steps, **extra,
          "config": json.loads(config_lib.to_json(scheme.config))}


def summary_line(summary: dict, path: str) -> str:
  name = summary["best"]["metric"]
  final = summary["final"].get(name)
  rate = summary.get("examples_per_s") or 0
  return (f"done: {name}={final:.4g} best={summary['best']['value']:.4g}"
          f" @ step {summary['best']['step']}, {summary['wall_s']:.1f} s,"
          f" {rate:,.0f} examples/s -> {path}")


def read_json(path: str):
  """(value, None), or (None, why): "is missing", or "is unreadable (line
  3, column 1: Expecting value)"."""
  if not os.path.exists(path):
    return None, "is missing"
  try:
    with open(path, encoding="utf8") as f:
      return json.loads(f.read()), None
  except json.JSONDecodeError as e:
    return None, f"is unreadable (line {e.lineno}, column {e.colno}: {e.msg})"
  except (OSError, UnicodeDecodeError) as e:
    return None, f"is unreadable ({e})"


def check_config(workdir: str, config, ckpt, lead: bool) -> None:
  """Checks a resume against the config stored in the newest checkpoint,
  then writes the workdir's config.json (atomically).

  The checkpoint's own config is the reference: config.json is a copy for
  people and tools to read, which may be gone, damaged or edited. Only
  checkpoints written before configs were stored in them are checked
  against config.json."""
  path = os.path.join(workdir, "config.json")
  copy, problem = read_json(path)
  step, reference = ckpt.stored_config()
  resuming = ckpt.latest_step() is not None
  if reference is None and resuming and copy is not None:
    reference = copy
  if reference is not None:
    changed = config_lib.check_resume(
        config_lib.from_json(json.dumps(reference)), config)
    if changed and lead:
      print("resuming with changed settings: " + "; ".join(changed), flush=True)
  if lead and resuming and problem and step is not None:
    print(f"{path} {problem}: the run was checked against the config stored"
          f" in its checkpoint at step {step}; writing {path} anew.",
          flush=True)
  if lead:
    files.write_atomic(path, config_lib.to_json(config))


class Ledger:
  """What the loop writes down as it goes: each step's metrics and health
  (kept on the device until a log interval), the progress bar, metrics.jsonl
  and TensorBoard, the timing. Only process 0 prints and writes."""

  def __init__(self, scheme, workdir: str, start: int, timer: Timer):
    self.scheme, self.cfg, self.timer = scheme, scheme.config.train, timer
    self.lead = jax.process_index() == 0
    self.writer = metrics.MetricWriter(workdir, enabled=self.lead)
    self.bar = tqdm.tqdm(total=scheme.num_steps, initial=start, desc="train",
                         unit="step", disable=not (self.cfg.progress and self.lead),
                         file=sys.stdout, dynamic_ncols=True, mininterval=0.5)
    self.names = scheme.nonfinite_leaf_names()
    for problem in self.writer.truncate_after(start):
      self.log(problem)
    self.start, self.pending, self.healths = start, [], []
    self.health_from = start + 1  # the step of healths[0]

  def log(self, line: str) -> None:
    if self.lead:
      self.bar.write(line)

  def compile(self, train_step, state, batch) -> None:
    self.timer.startup = compile_step(train_step, state, batch)

  def add(self, step: int, step_metrics, health) -> None:
    if step == self.start + 1:  # the one sync outside log intervals: startup's end
      jax.block_until_ready(health)
      self.log(self.timer.first_step_done())
    self.pending.append(step_metrics)
    self.healths.append(health)
    self.bar.update(1)

  def check_health(self, step: int) -> None:
    """Raises at a non-finite step the policy does not allow. Nothing is
    logged, evaluated or saved before the steps since the last check are
    known to be finite: one small fetch, no other sync."""
    check_health(self.cfg, jax.device_get(stack_steps(self.healths)),
                 self.health_from, self.names, self.log)
    self.healths, self.health_from = [], step + 1

  def train_metrics(self, step: int) -> None:
    fetched = jax.device_get(stack_steps(self.pending))
    means = {k: float(np.mean(v)) for k, v in fetched.items()}
    means.update(self.timer.interval(
        len(self.pending), timed=step > self.start + len(self.pending)))
    self.writer.write(step, "train", means)
    self.bar.set_postfix(loss=f"{means['loss']:.4g}", refresh=False)
    line = self.scheme.log_line(step, means)
    if line:
      self.log(line)
    self.pending = []

  def eval_metrics(self, step: int, values: dict, images: dict) -> None:
    self.writer.write(step, "eval", values)
    self.writer.images(step, images)
    self.log(f"eval   step {step}: " + " ".join(
        f"{k}={v:.4g}" for k, v in sorted(values.items())))

  def close(self) -> None:
    self.bar.close()
    self.writer.close()


def run(scheme, workdir: str, t_start: float | None = None) -> dict:
  """Trains (or resumes) `scheme` in `workdir`; returns the summary, or
  {"preempted": True, "step": s, "signal": name} when SIGTERM, the first
  SIGINT (Ctrl-C) or `scheme.stop_after` stopped it early with a checkpoint.
  The run holds the workdir throughout (files.workdir_lock): a second run
  there fails at once."""
  with files.workdir_lock(workdir, jax.process_index()):
    return _run(scheme, workdir, Timer(t_start or time.time()))


def _finished_summary(path: str, lead: bool):
  """A finished run's summary.json, or None if it must be written again."""
  summary, problem = read_json(path)
  if isinstance(summary, dict) and "best" in summary and "wall_s" in summary:
    return summary
  if lead and problem != "is missing":
    print(f"{path} {problem or 'is not a summary'}: writing it anew from the"
          " final checkpoint and metrics.jsonl.", flush=True)
  return None


def _run(scheme, workdir: str, timer: Timer) -> dict:
  config, cfg = scheme.config, scheme.config.train
  lead = jax.process_index() == 0
  summary_path = os.path.join(workdir, "summary.json")
  ckpt = checkpoint.Checkpointer(workdir, keep=cfg.keep_checkpoints,
                                 config_json=config_lib.to_json(config))
  check_config(workdir, config, ckpt, lead)
  inputs = scheme.inputs()
  state, start = ckpt.restore_latest(scheme.abstract_state(), inputs)
  if state is None:
    state, start = scheme.init_state(), 0
  else:
    timer.resume(ckpt.run_info(start).get("timing", {}))
  if lead:
    print(scheme.describe(state)
          + (f" | resuming at step {start}" if start else ""), flush=True)
  if start >= scheme.num_steps:
    summary = _finished_summary(summary_path, lead)
    if summary is not None:
      if lead:
        print(summary_line(summary, summary_path), flush=True)
      ckpt.close()
      return summary

  ledger = Ledger(scheme, workdir, start, timer)
  watcher = preemption.Watcher()
  timer.restart_interval()
  step, stopped = start, False
  try:
    for step in range(start + 1, scheme.num_steps + 1):
      batch = timer.next_input(lambda: scheme.next_input(inputs))
      if step == start + 1:
        ledger.compile(scheme.train_step, state, batch)
      state, step_metrics, health = scheme.train_step(state, batch)
      ledger.add(step, step_metrics, health)
      stopped = watcher.reached(step) or step == scheme.stop_after
      last = step == scheme.num_steps
      log_now = step % cfg.log_every == 0 or last
      eval_now = (step % cfg.eval_every == 0 or last) and not stopped
      save_now = step % cfg.checkpoint_every == 0 or last or stopped
      if log_now or eval_now or save_now:
        ledger.check_health(step)
      if log_now:
        ledger.train_metrics(step)
      if eval_now:
        ledger.eval_metrics(step, scheme.evaluate(state), scheme.images(state))
      if save_now:
        ckpt.save(step, state, inputs, run={"timing": timer.totals()})
      if stopped and not last:
        break
      if log_now:
        timer.restart_interval()
  finally:
    watcher.close()
    ledger.close()
    ckpt.wait()
    ckpt.close()

  if stopped and step < scheme.num_steps:
    if lead:
      print(f"{watcher.stop_line()}: saved a checkpoint at step {step} of"
            f" {scheme.num_steps}; run the same command to resume.", flush=True)
    return {"preempted": True, "step": step, "signal": watcher.signal}

  summary = summarize(scheme, workdir, {
      **timer.figures(scheme.examples_per_step, scheme.mesh.size),
      "resumed_from": start, "processes": jax.process_count(),
      "devices": scheme.mesh.size, "mesh": dict(scheme.mesh.shape)})
  summary.update(scheme.finish(state, workdir, summary))
  if lead:
    files.write_atomic(summary_path, json.dumps(summary, indent=2))
    print(summary_line(summary, summary_path), flush=True)
  return summary
