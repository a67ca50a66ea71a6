"""The pieces every form of a train step is built from, below the loop.

A `Run` is what a supervised config builds into before anything compiles:
mesh, logical axis rules, dataset info, task, the whole optimizer chain,
step count and the train state's shardings. From it:

  compute_grads    loss, metric sums, new model state and gradients of a batch
                   (gradient accumulation over micro-batches included)
  apply_gradients  the update shared by every step form, with the health
                   values the loop's NaN policy reads
  jit_step         the one place a step is jitted with explicit shardings,
                   donation and the mesh context
  make_train_step  the automatic form (jit + shardings: XLA inserts the
                   collectives); deeplearn.parallel holds the explicit ones
  make_eval_step / evaluate / abstract_state

Nothing here imports the loop, a scheme or a step form: they import this.
"""

import dataclasses
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from deeplearn import config as config_lib, data, optim
from deeplearn.models import layers
from deeplearn.parallel import async_sgd, local_sgd, mesh as mesh_lib, sharding


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
  """A jitted step that runs, and lowers, with its mesh set (`jax.set_mesh`)
  and its config's kernel forms (`layers.Kernels(config.kernels)`).

  flax's activation constraints (`nn.with_logical_constraint`) resolve logical
  names to mesh axes only when a mesh is in context at trace time, and
  `jax.set_mesh` cannot be entered inside jit: so the context goes around the
  call. Without it the constraints are silently dropped and XLA propagates
  the parameters' shardings alone (correct, but for the GPT-2 step 4.65
  instead of 2.87 GiB of temporaries per device, with all-to-alls). The
  kernel forms go the same way, so that the config chooses them where the
  step traces (None: "auto", for steps without Conv / Dense).
  """

  def __init__(self, jitted, mesh: jax.sharding.Mesh, kernels=None):
    self.jitted, self.mesh = jitted, mesh
    self.kernels = layers.Kernels(kernels)

  def __call__(self, *args):
    with jax.set_mesh(self.mesh), self.kernels:
      return self.jitted(*args)

  def lower(self, *args):
    with jax.set_mesh(self.mesh), self.kernels:
      return self.jitted.lower(*args)


def jit_step(fn, mesh: jax.sharding.Mesh, in_shardings, out_shardings=None,
             *, donate: bool = True, kernels=None) -> MeshStep:
  """`fn(state, *inputs)` jitted with explicit shardings, the state (argument
  0) donated, run and lowered under `mesh` and `kernels` (config.kernels):
  every step form goes through it.

  `out_shardings=None` lets XLA choose (eval steps return replicated sums)."""
  kwargs = {} if out_shardings is None else {"out_shardings": out_shardings}
  return MeshStep(jax.jit(fn, in_shardings=in_shardings,
                          donate_argnums=(0,) if donate else (), **kwargs),
                  mesh, kernels)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


@dataclasses.dataclass(frozen=True)
class Run:
  """Everything built from a supervised config before any compilation."""
  config: Any
  mesh: jax.sharding.Mesh
  rules: tuple
  info: data.DatasetInfo
  task: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  num_steps: int
  state_shardings: Any
  batch_sharding: NamedSharding
  init_fn: Any

  def jit_train_step(self, train_step) -> MeshStep:
    """(state, batch) -> (state, metrics, health) with the run's shardings."""
    out = replicated(self.mesh)
    return jit_step(train_step, self.mesh,
                    (self.state_shardings, self.batch_sharding),
                    (self.state_shardings, out, out),
                    kernels=self.config.get("kernels"))


def make_run(config, mesh: jax.sharding.Mesh, rules, info: data.DatasetInfo,
             task) -> Run:
  """The optimizer, step count and state (init function and shardings) of a
  checked config; deeplearn.schemes.supervised.build checks it first."""
  num_steps = config_lib.num_train_steps(
      config, info.num_examples[config.data.train_split])
  schedule = optim.make_schedule(config.schedule,
                                 config.optimizer.learning_rate, num_steps)
  tx = optim.from_config(config, schedule, rules, mesh)
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
  if config.train.step_form == "local_sgd":  # each device its own replica
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


def health(loss, grads, params) -> dict:
  """Whether the loss, gradients and new parameters are finite, and the index
  of the first non-finite leaf (`nonfinite_leaf_names`): with the streak of
  non-finite steps, what the loop's NaN policy reads."""
  finite = jnp.stack([jnp.all(jnp.isfinite(x))
                      for x in jax.tree.leaves((loss, grads, params))])
  return {"finite": jnp.all(finite), "first_nonfinite": jnp.argmin(finite)}


def apply_gradients(run: Run, state: TrainState, loss, sums, model_state,
                    grads):
  """The update shared by every form of the step: -> (state, metrics, health).

  Under `train.nonfinite = "skip"` a non-finite update is dropped whole:
  parameters, optimizer state, batch statistics and averaged weights all
  keep their old values. (optax.apply_if_finite guards only the optimizer
  update, not batch statistics or averaged weights.)
  """
  updates, opt_state = run.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  avg_params = state.avg_params
  if avg_params is not None:
    avg_params = optax.incremental_update(
        params, avg_params,
        optim.average_step_size(run.config.optimizer, state.step))
  checks = health(loss, grads, params)
  ok = checks["finite"]
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
  return new_state, step_metrics, {**checks,
                                   "streak": new_state.nonfinite_streak}


def make_train_step(run: Run) -> MeshStep:
  """The jitted step: (state, batch) -> (state, metrics, health).

  The automatic form of data parallelism: the batch arrives sharded over the
  mesh's batch axes and XLA inserts the gradient all-reduce. Activations are
  constrained by the logical axis rules (models name them), which is why the
  step runs under its mesh (`MeshStep`).
  """

  def train_step(state: TrainState, batch):
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

  return run.jit_train_step(train_step)


def nonfinite_leaf_names(run: Run) -> list[str]:
  """Names of the leaves `health["first_nonfinite"]` indexes into."""
  params = jax.eval_shape(run.init_fn, run.config.train.seed).params
  paths = [jax.tree_util.keystr(path, simple=True, separator="/")
           for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  return (["loss"] + [f"grads/{p}" for p in paths]
          + [f"params/{p}" for p in paths])


def make_eval_step(run: Run) -> MeshStep:
  task = run.task

  def eval_step(state: TrainState, batch):
    params = state.params if state.avg_params is None else state.avg_params
    with nn.logical_axis_rules(run.rules):
      return task.eval_sums(params, state.model_state, batch)

  return jit_step(eval_step, run.mesh,
                  (run.state_shardings, run.batch_sharding), donate=False,
                  kernels=run.config.get("kernels"))


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


def abstract(init_fn, shardings):
  """Shapes, dtypes and shardings of what `init_fn()` returns, computing
  nothing: what a restore fills in. `shardings`: a tree of them, or one for
  every leaf."""
  shapes = jax.eval_shape(init_fn)
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: shardings, shapes)
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      shapes, shardings)


def abstract_state(run: Run) -> TrainState:
  """The train state's shapes, dtypes and shardings."""
  return abstract(lambda: run.init_fn(run.config.train.seed),
                  run.state_shardings)


def describe(run: Run) -> str:
  return (f"{run.config.model.name} on {run.info.name} | {jax.process_count()}"
          f" process(es), {run.mesh.size} devices, mesh"
          f" {mesh_lib.describe(run.mesh)}")
