"""The train loop: one experiment config in, a trained, checkpointed run out.

  python -m deeplearn.train --config experiments/mnist1d_cnn.py --workdir runs/cnn

The loop owns data, sharding, compilation, checkpoints and logging; the task
(deeplearn.tasks) owns the loss. `train_step` and `eval_step` are pure, jitted
once with explicit shardings, and the train state is donated. Metrics stay on
the device until a log interval. Re-running the same command resumes from the
newest checkpoint in the workdir; a finished run reports its summary again.
"""

import dataclasses
import functools
import importlib
import json
import os
import sys
import time
from typing import Any

from absl import app, flags, logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from deeplearn import checkpoint, config as config_lib, data, distributed
from deeplearn import metrics, models
from deeplearn import optim, preemption, tasks
from deeplearn.parallel import async_sgd, mesh as mesh_lib, sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any  # non-trainable collections, e.g. batch_stats
  rng: jax.Array
  avg_params: Any  # EMA / Polyak weights for evaluation, or None
  nonfinite_streak: jax.Array  # non-finite updates skipped in a row


class MeshStep:
  """A jitted step that runs, and lowers, with its mesh set (`jax.set_mesh`).

  flax's activation constraints (`nn.with_logical_constraint`) resolve logical
  names to mesh axes only when a mesh is in context at trace time, and
  `jax.set_mesh` cannot be entered inside jit: so the context goes around the
  call. Without it the constraints are silently dropped and XLA propagates
  the parameters' shardings alone (correct, but for the GPT-2 step 4.65
  instead of 2.87 GiB of temporaries per device, with all-to-alls).
  """

  def __init__(self, jitted, mesh: jax.sharding.Mesh):
    self.jitted, self.mesh = jitted, mesh

  def __call__(self, *args):
    with jax.set_mesh(self.mesh):
      return self.jitted(*args)

  def lower(self, *args):
    with jax.set_mesh(self.mesh):
      return self.jitted.lower(*args)


class NonFiniteError(FloatingPointError):
  """A NaN or Inf in the loss, gradients or parameters; the step is named."""


@dataclasses.dataclass
class Run:
  """Everything built from a config before any compilation."""
  config: Any
  mesh: jax.sharding.Mesh
  rules: tuple
  info: data.DatasetInfo
  task: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  num_steps: int
  state_shardings: Any
  batch_sharding: jax.sharding.NamedSharding
  init_fn: Any


def build(config, devices=None) -> Run:
  """Resolves and checks the config against the devices and the dataset."""
  mesh = mesh_lib.make_mesh(config.mesh.to_dict(), devices)
  rules = sharding.rules_from_config(config.sharding)
  sharding.check_rules(rules, mesh)
  config_lib.validate(
      config, num_batch_shards=sharding.num_batch_shards(rules, mesh),
      process_count=jax.process_count())
  info = data.get_info(config.data)
  for key, value in (("num_classes", info.num_classes),
                     ("vocab_size", info.vocab_size)):
    if value and key in config.model and config.model[key] != value:
      raise ValueError(f"config.model.{key}={config.model[key]}, but"
                       f" {info.name} has {value}.")
  model = models.get_model(config.model)
  task = tasks.get_task(config.task or info.task, model, info,
                        config.loss.label_smoothing)
  num_steps = config_lib.num_train_steps(
      config, info.num_examples[config.data.train_split])
  schedule = optim.make_schedule(config.schedule,
                                 config.optimizer.learning_rate, num_steps)
  tx = optim.make_optimizer(config.optimizer, schedule)
  # Asynchronous SGD: gradients applied k steps late (config.optimizer).
  tx = async_sgd.from_config(tx, config.optimizer, config.train.seed)
  local = config.train.step_form == "local_sgd"
  if local:  # the replicas' own weights live in the optimizer state
    from deeplearn.parallel import local_sgd  # imports this module
    tx = local_sgd.from_config(tx, config.train, rules, mesh)
  averaging = config.optimizer.averaging != "none"

  def init_boxed(seed):
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
    variables = dict(task.init_variables(init_rng))
    params = variables.pop("params")
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state=tx.init(params), model_state=variables, rng=train_rng,
        avg_params=params if averaging else None,
        nonfinite_streak=jnp.zeros((), jnp.int32))

  abstract = jax.eval_shape(init_boxed, config.train.seed)
  state_shardings = sharding.state_shardings(abstract, rules, mesh)
  if local:
    state_shardings = local_sgd.replica_shardings(state_shardings, rules, mesh)
  init_fn = jax.jit(lambda seed: nn.unbox(init_boxed(seed)),
                    static_argnums=0, out_shardings=state_shardings)
  return Run(config=config, mesh=mesh, rules=rules, info=info, task=task,
             tx=tx, schedule=schedule, num_steps=num_steps,
             state_shardings=state_shardings,
             batch_sharding=sharding.batch_sharding(rules, mesh),
             init_fn=init_fn)


def compute_grads(run: Run, params, model_state, batch, rng):
  """Loss, metric sums, new model state and gradients of one (global) batch.

  With `train.grad_accum_steps = k` the batch is cut into k micro-batches
  that run one after another under `lax.scan` (activation memory of one
  micro-batch); gradients and sums are averaged / added. Micro-batch i takes
  every k-th example, so each one stays spread over all data-parallel devices.
  Batch statistics (batch norm) are then per micro-batch.
  """
  grad_fn = jax.value_and_grad(run.task.loss, has_aux=True)
  k = run.config.train.grad_accum_steps
  if k == 1:
    (loss, (sums, model_state)), grads = grad_fn(params, model_state, batch, rng)
    return loss, sums, model_state, grads
  micro = jax.tree.map(
      lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1),
      batch)  # [k, batch / k, ...]

  def one(carry, xs):
    grads_sum, sums_sum, model_state = carry
    micro_batch, i = xs
    (_, (sums, model_state)), grads = grad_fn(
        params, model_state, micro_batch, jax.random.fold_in(rng, i))
    add = lambda a, b: jax.tree.map(jnp.add, a, b)
    return (add(grads_sum, grads), add(sums_sum, sums), model_state), None

  sums_shape = jax.eval_shape(  # the metric sums' structure, for the carry
      lambda mb: run.task.loss(params, model_state, mb, rng)[1][0],
      jax.tree.map(lambda x: x[0], micro))
  zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)
  (grads, sums, model_state), _ = jax.lax.scan(
      one, (zeros(params), zeros(sums_shape), model_state),
      (micro, jnp.arange(k)))
  grads = jax.tree.map(lambda g: g / k, grads)
  return sums["loss"] / sums["count"], sums, model_state, grads


def apply_gradients(run: Run, state: TrainState, loss, sums, model_state,
                    grads):
  """The update shared by every form of the step: -> (state, metrics, health).

  `health` says whether the loss, gradients and new parameters are finite
  and, if not, the index of the first non-finite leaf (see
  `nonfinite_leaf_names`). Under `train.nonfinite = "skip"` a non-finite
  update is dropped whole: parameters, optimizer state, batch statistics and
  averaged weights all keep their old values. (optax.apply_if_finite guards
  only the optimizer update, not batch statistics or averaged weights.)
  """
  updates, opt_state = run.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  avg_params = state.avg_params
  if avg_params is not None:
    avg_params = optax.incremental_update(
        params, avg_params,
        optim.average_step_size(run.config.optimizer, state.step))
  finite = jnp.stack([jnp.all(jnp.isfinite(x))
                      for x in jax.tree.leaves((loss, grads, params))])
  ok = jnp.all(finite)
  new_state = state.replace(params=params, opt_state=opt_state,
                            model_state=model_state, avg_params=avg_params)
  if run.config.train.nonfinite == "skip":
    new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old),
                             new_state, state)
  new_state = new_state.replace(
      step=state.step + 1,
      nonfinite_streak=jnp.where(ok, 0, state.nonfinite_streak + 1))
  step_metrics = {**run.task.finalize(sums), "loss": loss,
                  "grad_norm": optax.tree.norm(grads),
                  "learning_rate": run.schedule(state.step)}
  health = {"finite": ok, "first_nonfinite": jnp.argmin(finite),
            "streak": new_state.nonfinite_streak}
  return new_state, step_metrics, health


def make_train_step(run: Run):
  """The jitted step: (state, batch) -> (state, metrics, health).

  The automatic form of data parallelism: the batch arrives sharded over the
  mesh's batch axes and XLA inserts the gradient all-reduce. Activations are
  constrained by the logical axis rules (models name them), which is why the
  jitted function comes wrapped in a `MeshStep`.
  """

  def train_step(state: TrainState, batch):
    # The rules name the activations' mesh axes (MeshStep sets the mesh).
    with nn.logical_axis_rules(run.rules):
      rng = jax.random.fold_in(state.rng, state.step)
      replicas = run.config.optimizer.replicas
      if replicas > 1:  # asynchronous replicas: tx delays each one's grads
        loss, sums, model_state, grads = async_sgd.replica_grads(
            functools.partial(compute_grads, run), replicas, state.params,
            state.model_state, batch, rng)
      else:
        loss, sums, model_state, grads = compute_grads(
            run, state.params, state.model_state, batch, rng)
      return apply_gradients(run, state, loss, sums, model_state, grads)

  replicated = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec())
  return MeshStep(jax.jit(
      train_step, in_shardings=(run.state_shardings, run.batch_sharding),
      out_shardings=(run.state_shardings, replicated, replicated),
      donate_argnums=0), run.mesh)


def nonfinite_leaf_names(run: Run) -> list[str]:
  """Names of the leaves `health["first_nonfinite"]` indexes into."""
  params = jax.eval_shape(run.init_fn, run.config.train.seed).params
  paths = [jax.tree_util.keystr(path, simple=True, separator="/")
           for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  return (["loss"] + [f"grads/{p}" for p in paths]
          + [f"params/{p}" for p in paths])


@jax.jit
def stack_steps(per_step: list):
  """A log interval's per-step values, one array [steps] per leaf.

  The host then fetches one array per leaf, not one per step and leaf: each
  fetch costs tens of microseconds on a CPU, and at 100 steps per interval
  the separate fetches took about a third as long as MNIST-1D's steps.
  """
  return jax.tree.map(lambda *xs: jnp.stack(xs), *per_step)


def check_health(run: Run, healths, first_step: int, names, log) -> None:
  """Raises NonFiniteError at the first step the policy does not allow.

  `healths` holds the steps' health values fetched as `stack_steps` stacks
  them: {"finite": [steps], ...}.
  """
  cfg = run.config.train
  for i in np.flatnonzero(~np.asarray(healths["finite"])):
    step = first_step + int(i)
    leaf = names[int(healths["first_nonfinite"][i])]
    streak = int(healths["streak"][i])
    if cfg.nonfinite == "skip" and streak <= cfg.max_nonfinite_skips:
      log(f"step {step}: non-finite {leaf}; update skipped ({streak} in a"
          f" row, at most {cfg.max_nonfinite_skips})")
      continue
    why = (f"{streak} non-finite updates in a row, more than"
           f" config.train.max_nonfinite_skips={cfg.max_nonfinite_skips}"
           if cfg.nonfinite == "skip" else "config.train.nonfinite='stop'")
    raise NonFiniteError(
        f"Non-finite value at step {step}: first in {leaf!r} ({why}). The"
        " newest checkpoint was written before it and is left untouched; lower"
        " the learning rate, clip gradients (config.optimizer.grad_clip_norm),"
        " or set config.train.nonfinite='skip'.")


def make_eval_step(run: Run):
  task = run.task

  def eval_step(state: TrainState, batch):
    params = state.params if state.avg_params is None else state.avg_params
    with nn.logical_axis_rules(run.rules):
      return task.eval_sums(params, state.model_state, batch)

  return MeshStep(jax.jit(eval_step, in_shardings=(run.state_shardings,
                                                   run.batch_sharding)),
                  run.mesh)


def evaluate(run: Run, eval_step, state, dataset) -> dict[str, float]:
  """Sums metrics over the whole eval split on device; one fetch at the end."""
  totals = None
  for local_batch in dataset:
    batch = sharding.global_batch(local_batch, run.batch_sharding)
    sums = eval_step(state, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError(f"config.data.eval_split={run.config.data.eval_split!r}"
                     " gave no batches.")
  return {k: float(v) for k, v in jax.device_get(run.task.finalize(totals)).items()}


def num_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def abstract_state(run: Run) -> TrainState:
  """The state's shapes, dtypes and shardings: what a restore fills in."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      jax.eval_shape(run.init_fn, run.config.train.seed), run.state_shardings)


def restore_or_init(run: Run, ckpt: checkpoint.Checkpointer, data_iterator):
  """The newest checkpoint's state (and iterator position), or a fresh state."""
  state, step = ckpt.restore_latest(abstract_state(run), data_iterator)
  if state is None:
    return run.init_fn(run.config.train.seed), 0
  return state, step


def _better(value, best, mode):
  return best is None or (value > best if mode == "max" else value < best)


def summarize(run: Run, workdir: str, extra: dict) -> dict:
  """Final and best eval metrics, from metrics.jsonl, plus run figures."""
  evals = metrics.read_records(os.path.join(workdir, "metrics.jsonl"), "eval")
  name, mode = run.task.best_metric
  if run.config.eval.best_metric:
    name = run.config.eval.best_metric
    mode = "min" if "loss" in name or "perplexity" in name else "max"
  best = None
  for record in evals:
    if name in record and _better(record[name], best and best[name], mode):
      best = record
  final = evals[-1] if evals else {}
  return {"final": {k: v for k, v in final.items() if k != "split"},
          "best": {"metric": name, "value": best and best[name],
                   "step": best and best["step"]},
          "steps": run.num_steps, **extra,
          "config": json.loads(config_lib.to_json(run.config))}


def summary_line(summary: dict, path: str) -> str:
  name = summary["best"]["metric"]
  final = summary["final"].get(name)
  rate = summary.get("examples_per_s") or 0
  return (f"done: {name}={final:.4g} best={summary['best']['value']:.4g}"
          f" @ step {summary['best']['step']}, {summary['wall_s']:.1f} s,"
          f" {rate:,.0f} examples/s -> {path}")


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


def device_batch(local_batch, batch_sharding):
  """The step's batch: global arrays, or for one process the numpy arrays.

  A jitted step copies numpy inputs to its in_shardings itself, in C++: about
  10 us for an MNIST-1D batch, against 150-200 us for the global arrays built
  in Python (`sharding.global_batch`), which several processes need.
  """
  if jax.process_count() == 1:
    return local_batch
  return sharding.global_batch(local_batch, batch_sharding)


def compile_step(train_step, state, batch) -> dict[str, float]:
  """Lowers and compiles the step ahead of its first call; the seconds of each.

  The call that follows finds the executable in jax's caches, so nothing is
  compiled twice. With a warm persistent cache, "compile" is the load.
  """
  if not hasattr(train_step, "lower"):
    return {}
  from deeplearn import inspect  # pylint: disable=g-import-not-at-top (imports train)
  t0 = time.perf_counter()
  lowered = train_step.lower(state, batch)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  out = {"lower_s": t1 - t0, "compile_s": time.perf_counter() - t1}
  try:  # XLA's count, per device; for FLOP/s and utilisation in the summary
    flops = inspect.step_flops(compiled)
  except Exception:  # pylint: disable=broad-except (a backend without cost analysis)
    flops = 0.0
  if flops > 0:
    out["step_flops"] = flops
  return out


# config.trainer -> module whose train_and_evaluate(config, workdir) runs it.
TRAINERS = {"word2vec": "deeplearn.language.word2vec"}


def train_and_evaluate(config, workdir: str, devices=None) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the summary."""
  t_start = time.time()
  use_compilation_cache(config.train.get("compilation_cache_dir", ""))
  trainer = config.get("trainer", "supervised")
  if trainer != "supervised":
    if trainer not in TRAINERS:
      raise ValueError(f"config.trainer={trainer!r}: use 'supervised' or one of"
                       f" {sorted(TRAINERS)}.")
    return importlib.import_module(TRAINERS[trainer]).train_and_evaluate(config, workdir)
  config_lib.check_workdir(workdir)
  run = build(config, devices)
  lead = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  summary_path = os.path.join(workdir, "summary.json")
  config_path = os.path.join(workdir, "config.json")
  ckpt = checkpoint.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                 config_json=config_lib.to_json(config))
  if ckpt.latest_step() is not None and os.path.exists(config_path):
    with open(config_path) as f:
      changed = config_lib.check_resume(config_lib.from_json(f.read()), config)
    if changed and lead:
      print("resuming with changed settings: " + "; ".join(changed), flush=True)
  if lead:  # atomically: other processes may be reading the stored one
    with open(config_path + ".tmp", "w") as f:
      f.write(config_lib.to_json(config))
    os.replace(config_path + ".tmp", config_path)

  train_ds = data.train_dataset(config.data, seed=config.train.seed,
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
  eval_ds = data.eval_dataset(config.data, process_index=jax.process_index(),
                              process_count=jax.process_count())
  train_iter = iter(train_ds)
  state, start = restore_or_init(run, ckpt, train_iter)
  if lead:
    print(f"{config.model.name} on {run.info.name} | {jax.process_count()}"
          f" process(es), {run.mesh.size} devices, mesh"
          f" {mesh_lib.describe(run.mesh)} | {num_params(state.params):,} params"
          + (f" | resuming at step {start}" if start else ""), flush=True)
  if start >= run.num_steps and os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
    if lead:
      print(summary_line(summary, summary_path), flush=True)
    ckpt.close()
    return summary

  writer = metrics.MetricWriter(workdir, enabled=lead)
  writer.truncate_after(start)
  if config.train.step_form == "shard_map":
    from deeplearn.parallel import data_parallel  # imports this module
    train_step = data_parallel.make_shard_map_train_step(run)
  elif config.train.step_form == "local_sgd":
    from deeplearn.parallel import local_sgd  # imports this module
    train_step = local_sgd.make_local_sgd_train_step(run)
  elif config.train.step_form == "pipeline":
    from deeplearn.parallel import pipeline  # imports this module
    train_step = pipeline.make_pipeline_train_step(run)
  else:
    train_step = make_train_step(run)
  eval_step = make_eval_step(run)
  leaf_names = nonfinite_leaf_names(run)
  watcher = preemption.Watcher()
  cfg = config.train
  bar = tqdm.tqdm(total=run.num_steps, initial=start, desc="train",
                  unit="step", disable=not (cfg.progress and lead),
                  file=sys.stdout, dynamic_ncols=True, mininterval=0.5)
  pending, healths = [], []  # per-step values, still on device
  health_from = start + 1  # the step of healths[0]
  train_s, steps_timed = 0.0, 0
  # Seconds the loop spent getting batches (next(), and for several
  # processes the global arrays): this log interval's, and the timed
  # intervals' (the first holds the compilation).
  interval_wait, wait_s = 0.0, 0.0
  startup = {}
  t_interval = time.time()
  step, preempted = start, False
  try:
    for step in range(start + 1, run.num_steps + 1):
      t_data = time.perf_counter()
      batch = device_batch(next(train_iter), run.batch_sharding)
      interval_wait += time.perf_counter() - t_data
      first = step == start + 1
      if first:
        startup = compile_step(train_step, state, batch)
      state, step_metrics, health = train_step(state, batch)
      if first:  # the one sync outside log intervals: startup's end
        jax.block_until_ready(health)
        startup["startup_s"] = time.time() - t_start
        if lead:
          bar.write("startup: " + ", ".join(
              f"{k.removesuffix('_s')} {v:.2f} s" for k, v in startup.items()
              if k.endswith("_s")) + " (first step done)")
      pending.append(step_metrics)
      healths.append(health)
      bar.update(1)
      preempted = watcher.reached(step)
      last = step == run.num_steps
      log_now = step % cfg.log_every == 0 or last
      eval_now = (step % cfg.eval_every == 0 or last) and not preempted
      save_now = step % cfg.checkpoint_every == 0 or last or preempted
      if log_now or eval_now or save_now:
        # Nothing is logged, evaluated or saved before the steps since the
        # last check are known to be finite: one small fetch, no other sync.
        check_health(run, jax.device_get(stack_steps(healths)), health_from,
                     leaf_names, bar.write)
        healths, health_from = [], step + 1
      if log_now:
        fetched = jax.device_get(stack_steps(pending))
        interval_s = time.time() - t_interval
        if step > start + len(pending):  # the first interval compiles
          train_s += interval_s
          steps_timed += len(pending)
          wait_s += interval_wait
        means = {k: float(np.mean(v)) for k, v in fetched.items()}
        means.update(data_wait_s=interval_wait, step_s=interval_s / len(pending),
                     data_wait_fraction=interval_wait / interval_s)
        interval_wait = 0.0
        writer.write(step, "train", means)
        bar.set_postfix(loss=f"{means['loss']:.4g}", refresh=False)
        pending = []
      if eval_now:
        eval_metrics = evaluate(run, eval_step, state, eval_ds)
        writer.write(step, "eval", eval_metrics)
        if lead:
          bar.write(f"eval   step {step}: " + " ".join(
              f"{k}={v:.4g}" for k, v in sorted(eval_metrics.items())))
      if save_now:
        ckpt.save(step, state, train_iter)
      if preempted and not last:
        break
      if log_now:
        t_interval = time.time()
  finally:
    watcher.close()
    bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()

  if preempted and step < run.num_steps:
    if lead:
      print(f"preempted: saved a checkpoint at step {step} of"
            f" {run.num_steps}; run the same command to resume.", flush=True)
    return {"preempted": True, "step": step}

  examples_per_s = (steps_timed * config.data.batch_size / train_s
                    if train_s > 0 else None)
  # Achieved FLOP/s of the whole run (all devices): XLA's count of the step's
  # FLOPs over the timed intervals' step time. Over the hardware's peak, the
  # model FLOP utilisation; benchmarks/utilisation.py measures the CPU's.
  if "step_flops" in startup and train_s > 0:
    startup["flop_s"] = startup["step_flops"] * run.mesh.size * steps_timed / train_s
  summary = summarize(run, workdir, {
      "wall_s": time.time() - t_start,
      "examples_per_s": examples_per_s, "resumed_from": start,
      **startup, "data_wait_s": wait_s,
      "data_wait_fraction": wait_s / train_s if train_s > 0 else None,
      "num_params": num_params(state.params),
      "processes": jax.process_count(), "devices": run.mesh.size,
      "mesh": dict(run.mesh.shape)})
  if lead:
    with open(summary_path, "w") as f:
      json.dump(summary, f, indent=2)
    print(summary_line(summary, summary_path), flush=True)
  return summary


def quiet_library_logs():
  """orbax and grain log every save at INFO; keep them for --verbosity=0."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def main():
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flag = config_flags.DEFINE_config_file(
      "config", None, "Experiment file, optionally with :variant.",
      lock_config=True)
  workdir_flag = flags.DEFINE_string(
      "workdir", None, "Where checkpoints, metrics and summary.json go;"
      " re-use it to resume.")
  coordinator = flags.DEFINE_string(
      "coordinator_address", None, "host:port of process 0 for a multi-process"
      " run started by hand (else $DEEPLEARN_COORDINATOR, a TPU pod or SLURM"
      " environment, or a single process).")
  num_processes = flags.DEFINE_integer("num_processes", None,
                                       "Processes in the run.")
  process_id = flags.DEFINE_integer("process_id", None, "This process's index.")
  heartbeat = flags.DEFINE_integer(
      "heartbeat_timeout_s", 100, "A process that has not heard from a peer"
      " for this long stops with an error instead of hanging.")
  flags.mark_flags_as_required(["config", "workdir"])
  jax.config.config_with_absl()

  def run(argv):
    del argv
    quiet_library_logs()
    distributed.initialize(coordinator.value, num_processes.value,
                           process_id.value, heartbeat.value)
    train_and_evaluate(config_flag.value, workdir_flag.value)

  app.run(run)


if __name__ == "__main__":
  main()
