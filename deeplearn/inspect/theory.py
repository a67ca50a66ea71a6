"""The least a parallel strategy must communicate per step, in bytes per
device (the package docstring's convention), beside which the compiled
step's collectives are read."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from deeplearn import step as step_lib
from deeplearn.hlo import KINDS
from deeplearn.models import moe
from deeplearn.parallel import sharding


def gradient_theory(run: step_lib.Run, state) -> dict:
  """Minimum gradient / parameter collective bytes per step, by kind."""
  mesh = run.mesh
  batch = [a for a in sharding.batch_axes(run.rules, mesh) if mesh.shape[a] > 1]
  out = {kind: 0 for kind in KINDS}
  if not batch:
    return out
  for p in jax.tree.leaves(state.params):
    used = {a for axes in p.sharding.spec if axes
            for a in ((axes,) if isinstance(axes, str) else axes)}
    split = math.prod(mesh.shape[a] for a in used if a not in batch)
    gathered = math.prod(p.shape) * np.dtype(p.dtype).itemsize // split
    fsdp = math.prod(mesh.shape[a] for a in batch if a in used)
    if "expert" in used and "expert" in batch:
      # Expert parallelism: the tokens come to the experts, whose weights
      # stay put; their gradients reduce over the other batch axes only.
      if len(batch) > len([a for a in batch if a in used]):
        out["all-reduce"] += gathered // fsdp
    elif fsdp > 1:  # ZeRO-3: gather for the forward, reduce-scatter the grads
      out["all-gather"] += gathered
      out["reduce-scatter"] += gathered
      if len(batch) > len([a for a in batch if a in used]):
        out["all-reduce"] += gathered // fsdp  # the shard, over the rest
    else:
      out["all-reduce"] += gathered
  return out


def tp_activation_theory(run: step_lib.Run) -> int:
  """Megatron's activation all-reduces, bytes per step: 2 forward + 2
  backward per block of [batch per device, length, embed] in the compute
  dtype. Only for models with blocks (num_layers, embed_dim) on a mesh
  whose `model` axis splits them."""
  model_cfg, mesh = run.config.model, run.mesh
  if mesh.shape.get("model", 1) == 1 or not all(
      k in model_cfg for k in ("num_layers", "embed_dim")):
    return 0
  rules = dict(run.rules)
  if not any(rules.get(name) == "model" for name in ("mlp", "heads")):
    return 0
  batch = run.config.data.batch_size // sharding.num_batch_shards(run.rules, mesh)
  length = run.config.data.seq_len or 1
  itemsize = jnp.dtype(model_cfg.get("dtype", "float32")).itemsize
  return 4 * model_cfg.num_layers * batch * length * model_cfg.embed_dim * itemsize


def moe_all_to_all_theory(run: step_lib.Run) -> int:
  """Expert parallelism's all-to-alls, bytes per step: per sparse MoE layer
  the dispatch and the combine, forward and backward, each of the slots a
  device's tokens fill, [experts, batch per device, capacity, embed] in the
  compute dtype (GShard). Only when `expert -> expert` splits the experts."""
  model_cfg, mesh = run.config.model, run.mesh
  experts = model_cfg.get("moe_experts", 0)
  if (not experts or mesh.shape.get("expert", 1) == 1
      or dict(run.rules).get("expert") != "expert"
      or model_cfg.get("moe_mode") == "soft"):
    return 0
  length = run.config.data.seq_len
  slots = moe.capacity(length, experts, model_cfg.moe_top_k,
                       model_cfg.moe_capacity_factor)
  batch = run.config.data.batch_size // sharding.num_batch_shards(run.rules, mesh)
  itemsize = jnp.dtype(model_cfg.get("dtype", "float32")).itemsize
  layers = model_cfg.num_layers // model_cfg.moe_every
  return 4 * layers * experts * batch * slots * model_cfg.embed_dim * itemsize
