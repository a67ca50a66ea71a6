"""Pipeline parallelism: the model's layers cut into stages along `stage`.

Lecture concept: pipelined model parallelism. Each device of the `stage`
axis holds L/p consecutive layers; a global batch is cut into m micro-batches
that flow through the stages, activations passed to the next stage and
gradients back to the previous one with `lax.ppermute`. Each tick of the
schedule, every stage runs at most one forward (F) and then one backward (B)
of a micro-batch, and the ticks' activations and gradients move one stage.
Two schedules (`config.train.pipeline_schedule`):

  gpipe  all forwards, then all backwards (Huang et al., "GPipe", 2019): a
         stage keeps the inputs of all m micro-batches until the flush.
  1f1b   one-forward-one-backward (PipeDream-Flush, Narayanan et al.,
         "Memory-efficient pipeline-parallel DNN training", 2021): after a
         warm-up of forwards, each tick runs one F and one B, and stage s
         runs at most 2(p - s) - 1 micro-batches ahead of its backwards (the
         round trip to the last stage and back), so it keeps O(p) inputs,
         not m.

Work is 2m op-slots per stage over m + p - 1 forward and m + p - 1 backward
slot-times: the bubble is (p - 1) / (m + p - 1) for both (`bubble_fraction`,
also when a backward costs more than a forward: the ticks are in lockstep,
and a 1F1B tick with both ops on every stage wastes nothing). As in GPipe, a
stage keeps only its input per micro-batch and recomputes its forward in the
backward (jax.vjp): the stash of inputs is the activation memory the
schedule bounds.

The Transformer with `scan_layers` pipelines: its block parameters carry a
leading `layers` axis, which the rule `("layers", "stage")` splits into the
stages. The embedding runs on the first stage, the final LayerNorm, output
layer and loss on the last (tied embeddings: both use `wte`, whose gradient
is summed over stages): the model's own methods `embed`, `blocks` (on a
stage's slice of the stack) and `logits`, on its own parameters. The batch
also splits over `data` and `fsdp` (the mesh's batch axes): gradients are
summed over them. Parameters stored sharded over `fsdp` are gathered whole
for the step (jit inserts the all-gather); the optimizer update runs on the
shards. The `model` and `expert` axes must be 1.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from deeplearn import step as step_lib
from deeplearn.config import check_choice, multiples_near
from deeplearn.parallel import sharding

SCHEDULES = ("gpipe", "1f1b")


def schedule(kind: str, stages: int, microbatches: int):
  """The timetable: micro-batch of each tick's F and B, -1 for none, as two
  int arrays [ticks, stages].

  F(j) runs on stage s once stage s-1 ran it in an earlier tick; B(j) once
  stage s ran F(j) (earlier, or in this tick's forward) and stage s+1 ran
  B(j) in an earlier tick. GPipe starts backwards after its last forward;
  1F1B runs a forward only while fewer than 2(p - s) - 1 wait for their B.
  """
  if kind not in SCHEDULES:
    raise ValueError(f"pipeline schedule {kind!r}: use one of {SCHEDULES}.")
  p, m = stages, microbatches
  t_f = np.full((p, m), -1)  # tick of F(j) on stage s
  t_b = np.full((p, m), -1)
  fwd, bwd = [], []
  while (t_b < 0).any():
    t = len(fwd)
    f_row, b_row = [-1] * p, [-1] * p
    for s in range(p):
      f, b = (t_f[s] >= 0).sum(), (t_b[s] >= 0).sum()  # next F / B, in order
      ahead = 2 * (p - s) - 1 if kind == "1f1b" else m
      if f < m and f - b < ahead and (s == 0 or 0 <= t_f[s - 1, f] < t):
        f_row[s], t_f[s, f] = f, t
      flushed = kind == "1f1b" or (t_f[s] >= 0).all()
      if (b < m and flushed and 0 <= t_f[s, b] <= t
          and (s == p - 1 or 0 <= t_b[s + 1, b] < t)):
        b_row[s], t_b[s, b] = b, t
    fwd.append(f_row)
    bwd.append(b_row)
  return np.array(fwd, np.int32), np.array(bwd, np.int32)


def bubble_fraction(fwd, bwd, backward_cost: float = 1.0) -> float:
  """Idle share of the stages' time, ticks in lockstep: a tick lasts as long
  as its busiest stage's F + B, a backward costing `backward_cost` forwards
  (about 3 here: its forward is recomputed)."""
  work = (fwd >= 0) + backward_cost * (bwd >= 0)  # [ticks, stages]
  return float(1 - work.sum() / (work.shape[1] * work.max(axis=1).sum()))


def buffer_slots(fwd, bwd) -> int:
  """Fewest slots K such that micro-batch j's received input (or gradient),
  kept in slot j % K from the tick it arrives to its backward, never
  overwrites one still needed: the activation memory of the schedule."""
  ticks, p = fwd.shape
  when = lambda table, s: {int(table[t, s]): t for t in range(ticks)
                           if table[t, s] >= 0}
  spans = []  # (arrival tick, backward tick, micro-batch) per stage and buffer
  for s in range(p):
    done = when(bwd, s)
    for sender, table in ((s - 1, fwd), (s + 1, bwd)):
      if 0 <= sender < p:
        spans.append([(t, done[j], j) for j, t in when(table, sender).items()])
  m = int(fwd.max()) + 1
  for k in range(1, m + 1):
    if all(not (j1 != j2 and j1 % k == j2 % k and a1 < d2 and a2 < d1)
           for buf in spans for a1, d1, j1 in buf for a2, d2, j2 in buf):
      return k
  return m


def check(config, mesh, rules) -> None:
  """Refuses, naming the key and the fix, a run the pipeline cannot split;
  every check of the pipeline step form, before anything is built."""
  train, model = config.train, config.model
  check_choice("config.train.pipeline_schedule", train.pipeline_schedule,
               SCHEDULES)
  m, shards = train.microbatches, sharding.num_batch_shards(rules, mesh)
  if m < 1 or config.data.batch_size % (m * shards):
    raise ValueError(
        f"config.train.microbatches={m}: the global batch"
        f" (config.data.batch_size={config.data.batch_size}) must divide into"
        f" {m} micro-batches on each of the {shards} batch shards;"
        " use a batch_size of"
        f" {multiples_near(config.data.batch_size, max(m, 1) * shards)}.")
  if (model.name != "transformer" or not model.get("scan_layers")
      or model.get("output", "softmax") != "softmax"):
    raise ValueError(
        "config.train.step_form='pipeline' cuts a stack of equal layers into"
        " stages: use config.model.name='transformer' with"
        f" config.model.scan_layers=True (got name={model.name!r},"
        f" scan_layers={model.get('scan_layers')}).")
  p = mesh.shape["stage"]
  if model.num_layers % p:
    raise ValueError(
        f"config.model.num_layers={model.num_layers} must divide into the"
        f" config.mesh.stage={p} pipeline stages: each stage holds an equal"
        " share of the layers.")
  if train.grad_accum_steps != 1 or config.optimizer.replicas != 1:
    raise ValueError(
        "config.train.step_form='pipeline' already cuts the batch into"
        " config.train.microbatches: set config.train.grad_accum_steps=1 and"
        " config.optimizer.replicas=1.")
  if mesh.shape["model"] > 1 or mesh.shape["expert"] > 1:
    raise ValueError(
        "config.train.step_form='pipeline' splits the mesh axes data, fsdp and"
        f" stage; got mesh {dict(mesh.shape)}: set config.mesh.model and"
        " config.mesh.expert to 1.")
  if ("layers", "stage") not in rules:
    raise ValueError(
        "config.train.step_form='pipeline' keeps each stage's layers on its"
        " own devices: add the rule ('layers', 'stage') to"
        f" config.sharding.rules (now {rules}).")


def _param_specs(params):
  """P('stage') for the block stack (its leading `layers` axis), P() else."""
  return {name: jax.tree.map(lambda _: P("stage") if name == "blocks" else P(),
                             tree) for name, tree in params.items()}


def make_pipeline_grads(run: step_lib.Run):
  """(params, batch, rng) -> (loss, metric sums, grads), pipelined.

  Called inside jit; the gradients come out laid out as the parameters'
  in-specs (blocks split over stage), summed over micro-batches and the
  batch axes, equal to the unpipelined model's on the same global batch.
  """
  check(run.config, run.mesh, run.rules)
  cfg = run.config.train
  p, m = run.mesh.shape["stage"], cfg.microbatches
  fwd, bwd = schedule(cfg.pipeline_schedule, p, m)
  slots = buffer_slots(fwd, bwd)
  model = run.task.model
  layers_per_stage = model.num_layers // p
  axes = sharding.batch_axes(run.rules, run.mesh)
  task = run.task
  dtype = jnp.dtype(model.dtype)

  def stage_fn(block_params, rest, x_in, micro, rng):
    """This stage on one micro-batch: (output, loss sum), metric sums.

    The first stage embeds the tokens instead of reading x_in; the last
    scores its output (the others give zeros, so their gradient is zero)."""
    s = lax.axis_index("stage")
    x = lax.cond(s == 0, lambda: model.apply(
        {"params": rest}, micro["inputs"], True, method="embed",
        rngs={"dropout": rng}), lambda: x_in)
    # Each stage's layers draw their own dropout masks.
    key = jax.random.fold_in(jax.random.fold_in(rng, 1), s)
    y = model.apply({"params": {"blocks": block_params}}, x, True,
                    layers_per_stage, method="blocks", rngs={"dropout": key})

    def score():  # the task's cross-entropy sums, as in its loss
      targets = micro["targets"]
      ones = jnp.ones(targets.shape[0], jnp.float32)
      logits = model.apply({"params": rest}, y, method="logits")
      return task.sums(logits, targets, ones, task.label_smoothing)

    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(score))
    sums = lax.cond(s == p - 1, score, lambda: zeros)
    return (y, sums["loss"]), sums

  def pipelined(params, batch, rng):
    block_params = params["blocks"]
    rest = {k: v for k, v in params.items() if k != "blocks"}
    s = lax.axis_index("stage")
    if axes:  # each batch shard draws its own dropout masks
      rng = jax.random.fold_in(rng, lax.axis_index(axes))
    micro = jax.tree.map(lambda x: x.reshape(m, -1, *x.shape[1:]), batch)
    # Target tokens of the whole global batch: the loss is their mean.
    tokens = run.config.data.batch_size * math.prod(batch["targets"].shape[1:])
    width = (*micro["inputs"].shape[1:], model.embed_dim)
    buffer = jnp.zeros((slots, *width), dtype)  # [K, micro, length, embed]
    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
    sums_shape = jax.eval_shape(
        lambda: stage_fn(block_params, rest, buffer[0],
                         jax.tree.map(lambda x: x[0], micro), rng)[1])

    def tick(carry, row):
      inputs, grads_in, grads, sums = carry
      f_row, b_row = row  # this tick's F and B micro-batch of every stage
      # Micro-batch j's inputs and dropout masks (the same in B's recompute).
      args = lambda j: (inputs[j % slots], jax.tree.map(lambda x: x[j], micro),
                        jax.random.fold_in(rng, j))

      def forward():
        return stage_fn(block_params, rest, *args(f_row[s]))[0][0]

      def backward(grads, sums):
        j = b_row[s]
        x_in, one, key = args(j)
        _, vjp, new = jax.vjp(lambda b, r, x: stage_fn(b, r, x, one, key),
                              block_params, rest, x_in, has_aux=True)
        # d(mean loss over the global batch) / d(this loss sum) = 1 / tokens.
        d_blocks, d_rest, dx = vjp(
            (grads_in[j % slots], jnp.asarray(1.0 / tokens, jnp.float32)))
        grads = jax.tree.map(jnp.add, grads, {"blocks": d_blocks, **d_rest})
        return dx, grads, jax.tree.map(jnp.add, sums, new)

      nothing = jnp.zeros(width, dtype)
      # The last stage sends nothing on: its forward is the recomputation in
      # its backward, which also gives the loss (same tick in 1F1B).
      y = lax.cond((f_row[s] >= 0) & (s < p - 1), forward, lambda: nothing)
      dx, grads, sums = lax.cond(b_row[s] >= 0, backward,
                                 lambda g, a: (nothing, g, a), grads, sums)
      # Activations go one stage on, gradients one stage back.
      y = lax.ppermute(y, "stage", [(i, i + 1) for i in range(p - 1)])
      dx = lax.ppermute(dx, "stage", [(i + 1, i) for i in range(p - 1)])
      j_y = f_row[jnp.maximum(s - 1, 0)]  # what arrived, -1 for nothing
      j_dx = b_row[jnp.minimum(s + 1, p - 1)]
      put = lambda buf, got, x, j: buf.at[j % slots].set(
          jnp.where(got, x, buf[j % slots]))
      inputs = put(inputs, (s > 0) & (j_y >= 0), y, j_y)
      grads_in = put(grads_in, (s < p - 1) & (j_dx >= 0), dx, j_dx)
      return (inputs, grads_in, grads, sums), None

    carry = (buffer, buffer, zeros(params), zeros(sums_shape))
    (_, _, grads, sums), _ = lax.scan(tick, carry, (jnp.asarray(fwd),
                                                    jnp.asarray(bwd)))
    # Embedding and output layer: replicated over stages, used on one or two.
    rest_grads = lax.psum({k: v for k, v in grads.items() if k != "blocks"},
                          "stage")
    grads = {**rest_grads, "blocks": grads["blocks"]}
    sums = lax.psum(sums, "stage")
    if axes:
      grads, sums = lax.psum((grads, sums), axes)
    return sums["loss"] / sums["count"], sums, grads

  def grads_fn(params, batch, rng):
    specs = _param_specs(params)
    # check_vma=False: pmap-style untyped replication, as in data_parallel.
    return jax.shard_map(
        pipelined, mesh=run.mesh, in_specs=(specs, P(axes or None), P()),
        out_specs=(P(), P(), specs), axis_names=frozenset({*axes, "stage"}),
        check_vma=False)(params, batch, rng)

  return grads_fn


def make_pipeline_train_step(run: step_lib.Run):
  """The pipelined step, a drop-in for `step_lib.make_train_step(run)`:
  (state, batch) -> (state, metrics, health), jitted, state donated."""
  grads_fn = make_pipeline_grads(run)

  def train_step(state, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    loss, sums, grads = grads_fn(state.params, batch, rng)
    return step_lib.apply_gradients(run, state, loss, sums, state.model_state,
                                grads)

  return run.jit_train_step(train_step)
