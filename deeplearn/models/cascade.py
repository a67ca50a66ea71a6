"""Cascades and early exits: classifiers that spend computation only where it is needed.

Lecture concept: dynamic structure ("cascades": a cheap model answers the easy
examples, a costly one only the rest; Viola & Jones, CVPR 2001, for the rare-object
detection case) and early exit inside one network (BranchyNet, Teerapittayanon et
al., ICPR 2016). Both families here expose the same staged interface:

  __call__(x, train) -> logits of every stage, [stages, batch, classes] (training:
                        the task sums the stages' cross-entropies, all trained jointly)
  stage(k, carry)    -> (logits [batch, classes], carry for stage k + 1); stage 0's
                        carry is the input
  final(x)           -> the last stage's logits alone, computed the cheapest way:
                        the "expensive model everywhere" baseline

`cascade`: independent models of increasing cost (logistic regression -> MLP ->
convnet by default; no shared parameters), each stage's carry the input itself.
On digits (8x8) the default is 650 + 4,810 + 13,706 = 19,166 parameters.
`early_exit_convnet`: conv blocks with an exit head (flatten -> dense) after each;
stage k's carry is block k's feature map, so a later exit reuses what earlier
ones computed. On digits the default is 9,118 parameters.

Static shapes: `compact_predict` runs stage k only on the examples stages 0..k-1
did not answer, by sorting the survivors to the front and running the stage on
fixed-size buckets, only as many as the survivors fill (a `lax.fori_loop` whose
trip count is data-dependent: XLA lowers it to a while loop). `dense_predict` runs
every stage on every example and then selects: the reference it must equal.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from deeplearn import hlo
from deeplearn.models.convnet import ConvNet, block_max_pool
from deeplearn.models.layers import Conv, Dense, logical_init
from deeplearn.models.linear import Linear
from deeplearn.models.mlp import MLP
from deeplearn.models.registry import register

STAGE_KINDS = ("linear", "mlp", "convnet")


@register("cascade")
class Cascade(nn.Module):
  """inputs: [batch, H, W, C] (or anything the stages flatten). Returns [stages, batch, classes].

  stages: the members, cheapest first, each one of STAGE_KINDS; mlp_hidden_sizes:
  the MLP's hidden widths; conv_features, conv_hidden_sizes: the convnet's blocks
  (3x3 SAME convs, 2x2 pools) and dense layers (the digits convnet's by default).
  """
  num_classes: int = 10
  stages: Sequence[str] = ("linear", "mlp", "convnet")
  mlp_hidden_sizes: Sequence[int] = (64,)
  conv_features: Sequence[int] = (16, 32)
  conv_hidden_sizes: Sequence[int] = (64,)

  @property
  def num_stages(self) -> int:
    return len(self.stages)

  def check(self) -> None:
    """Raises naming config.model.stages on a member no cascade builds."""
    if len(self.stages) < 2:
      raise ValueError(f"config.model.stages={tuple(self.stages)} needs at least two"
                       " stages, cheapest first.")
    for kind in self.stages:
      if kind not in STAGE_KINDS:
        raise ValueError(f"config.model.stages has {kind!r}; each stage is one of"
                         f" {STAGE_KINDS}.")

  def setup(self):
    self.check()
    members = []
    for kind in self.stages:
      if kind == "linear":
        members.append(Linear(self.num_classes))
      elif kind == "mlp":
        members.append(MLP(self.num_classes, hidden_sizes=self.mlp_hidden_sizes))
      else:
        members.append(ConvNet(
            self.num_classes, features=self.conv_features, kernel_size=3,
            pools=(2,) * len(self.conv_features), padding="SAME",
            hidden_sizes=self.conv_hidden_sizes))
    self.members = members

  def stage(self, k: int, carry, train: bool = False):
    return self.members[k](carry, train=train), carry

  def final(self, inputs):
    return self.members[-1](inputs, train=False)

  def __call__(self, inputs, *, train: bool):
    return jnp.stack([m(inputs, train=train) for m in self.members])


@register("early_exit_convnet")
class EarlyExitConvNet(nn.Module):
  """inputs: [batch, H, W, C]. Returns [blocks, batch, classes]: one exit per block.

  Block i: conv 3x3 SAME (features[i] channels) -> max-pool pools[i] -> relu; its
  exit flattens the block's output into a dense classifier.
  """
  num_classes: int = 10
  features: Sequence[int] = (8, 16, 32)
  pools: Sequence[int] = (2, 2, 1)

  @property
  def num_stages(self) -> int:
    return len(self.features)

  def check(self) -> None:
    if len(self.features) != len(self.pools) or len(self.features) < 2:
      raise ValueError(f"config.model.pools={tuple(self.pools)} needs one window per entry"
                       f" of config.model.features={tuple(self.features)}, at least two.")

  def setup(self):
    self.check()
    self.convs = [Conv(f, (3, 3), padding="SAME",
                       **logical_init(None, None, None, "conv_out"))
                  for f in self.features]
    self.heads = [Dense(self.num_classes, **logical_init("embed", "vocab"))
                  for _ in self.features]

  def block(self, k: int, x):
    x = x[..., None] if x.ndim == 3 else x
    return nn.relu(block_max_pool(self.convs[k](x), self.pools[k]))

  def stage(self, k: int, carry, train: bool = False):
    del train
    h = self.block(k, carry)
    return self.heads[k](h.reshape(h.shape[0], -1)).astype(jnp.float32), h

  def final(self, inputs):
    h = inputs
    for k in range(self.num_stages):
      h = self.block(k, h)
    return self.heads[-1](h.reshape(h.shape[0], -1)).astype(jnp.float32)

  def __call__(self, inputs, *, train: bool):
    outs, h = [], inputs
    for k in range(self.num_stages):
      logits, h = self.stage(k, h, train)
      outs.append(logits)
    return jnp.stack(outs)


# --- inference --------------------------------------------------------------------------


def exits(logits, threshold, reject_class: int = -1):
  """(prediction [batch], may exit [batch]) of one stage: an example exits when its
  top softmax probability is at least `threshold` and, with reject_class >= 0
  (detection: early stages only reject), its prediction is that class."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  pred = jnp.argmax(probs, -1)
  ok = jnp.max(probs, -1) >= threshold
  if reject_class >= 0:
    ok &= pred == reject_class
  return pred.astype(jnp.int32), ok


def _stage(model, variables, k, carry):
  return model.apply(variables, k, carry, method="stage")


def dense_predict(model, variables, x, thresholds, reject_class: int = -1):
  """Every stage on every example, then each example's first exit: (pred, exit stage).

  thresholds: [stages - 1], one per stage but the last (which always answers)."""
  pred = exit_stage = done = None
  carry = x
  for k in range(model.num_stages):
    logits, carry = _stage(model, variables, k, carry)
    t = thresholds[k] if k < model.num_stages - 1 else -jnp.inf
    p, ok = exits(logits, t, reject_class)
    if k == model.num_stages - 1:
      ok = jnp.ones_like(ok)
    if pred is None:
      pred, exit_stage, done = p, jnp.zeros_like(p), ok
      continue
    newly = ok & ~done
    pred = jnp.where(done, pred, p)
    exit_stage = jnp.where(newly, k, exit_stage)
    done = done | ok
  return pred, exit_stage


def compact_predict(model, variables, x, thresholds, *, bucket: int,
                    reject_class: int = -1):
  """dense_predict's answer, computing stage k >= 1 only on buckets of survivors.

  Shapes stay static: the survivors (examples no earlier stage answered) are
  sorted to the front, a stable argsort of the exit flags; stage k then runs on
  consecutive `bucket`-sized slices of that order, as many as the survivors fill,
  and the results are scattered back. A rejected example costs its share of a
  sort and a gather, not the stage. x's batch must be a multiple of `bucket`.
  """
  n = x.shape[0]
  if n % bucket:
    raise ValueError(f"batch {n} must be a multiple of the bucket size {bucket}")
  logits, carry = _stage(model, variables, 0, x)
  pred, done = exits(logits, thresholds[0], reject_class)
  exit_stage = jnp.zeros_like(pred)
  for k in range(1, model.num_stages):
    last = k == model.num_stages - 1
    order = jnp.argsort(done, stable=True)  # survivors (False) first
    inverse = jnp.argsort(order)
    sorted_carry = jax.tree.map(lambda a: a[order], carry)
    buckets = (n - jnp.sum(done) + bucket - 1) // bucket
    chunk = lambda a, i: lax.dynamic_slice_in_dim(a, i * bucket, bucket)  # noqa: E731
    shapes = jax.eval_shape(lambda c: _stage(model, variables, k, c),
                            jax.tree.map(lambda a: chunk(a, 0), sorted_carry))
    out = jax.tree.map(lambda s: jnp.zeros((n, *s.shape[1:]), s.dtype), shapes)

    def body(i, out, k=k, sorted_carry=sorted_carry):
      got = _stage(model, variables, k, jax.tree.map(lambda a: chunk(a, i), sorted_carry))
      return jax.tree.map(
          lambda o, g: lax.dynamic_update_slice_in_dim(o, g, i * bucket, 0), out, got)

    logits, carry = jax.tree.map(lambda a: a[inverse],
                                 lax.fori_loop(0, buckets, body, out))
    p, ok = exits(logits, -jnp.inf if last else thresholds[k], reject_class)
    ok = jnp.ones_like(ok) if last else ok
    newly = ok & ~done
    pred = jnp.where(done, pred, p)
    exit_stage = jnp.where(newly, k, exit_stage)
    done = done | ok
  return pred, exit_stage


def stage_flops(model, variables, example_shape, batch: int = 8) -> np.ndarray:
  """XLA's FLOP count per example of each stage's own work (stage k from its
  carry), [stages], then of `final` alone: (per stage, baseline)."""
  x = jax.ShapeDtypeStruct((batch, *example_shape), jnp.float32)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables)

  def count(fn, *args):
    return hlo.step_flops(jax.jit(fn).lower(abstract, *args).compile()) / batch

  flops, carry = [], x
  for k in range(model.num_stages):
    flops.append(count(lambda v, c, k=k: _stage(model, v, k, c)[0], carry))
    carry = jax.eval_shape(lambda v, c, k=k: _stage(model, v, k, c)[1], abstract, carry)
  baseline = count(lambda v, c: model.apply(v, c, method="final"), x)
  return np.asarray(flops), baseline
