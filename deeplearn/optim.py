"""Optimizers and learning-rate schedules as optax chains built from config.

The lecture's optimisation tricks map to optax pieces: momentum / Nesterov
(`optax.sgd`), AdaGrad, Adam(W), and the large-batch LARS and LAMB; step, exponential and cosine decay with
linear warmup; gradient clipping by global norm; L2 weight decay added to the
gradient (coupled) or to the update (decoupled, AdamW), on every parameter
or, with `decay_mask="kernels"`, on kernels and embeddings only. Parameter averaging
(EMA / Polyak, Polyak & Juditsky 1992) lives in the train state and is
updated with `optax.incremental_update`; see `average_step_size`.
"""

import jax
import jax.numpy as jnp
import optax

from deeplearn.config import check_choice
from deeplearn.parallel import async_sgd, local_sgd

OPTIMIZERS = ("sgd", "adagrad", "adam", "adamw", "lars", "lamb")
# Optimizers whose own update applies config.optimizer.weight_decay.
DECOUPLED_DECAY = ("adamw", "lars", "lamb")
SCHEDULES = ("constant", "exponential", "step", "cosine")
DECAY_MASKS = ("all", "kernels")
# Leaf names of the weights `decay_mask="kernels"` decays: flax's Dense / Conv
# / DenseGeneral kernels and Embed tables. By name, not by rank: with scanned
# layers a LayerNorm scale is 2-D too.
DECAYED_NAMES = ("kernel", "embedding")


def decay_mask(name: str):
  """None (decay every parameter) or a params -> bool-tree mask for optax."""
  check_choice("config.optimizer.decay_mask", name, DECAY_MASKS)
  if name == "all":
    return None

  def mask(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) in DECAYED_NAMES,
        params)

  return mask


def make_schedule(sched_cfg, learning_rate: float,
                  total_steps: int) -> optax.Schedule:
  name = sched_cfg.name
  check_choice("config.schedule.name", name, SCHEDULES, "a schedule")
  warmup = int(sched_cfg.warmup_steps)
  if warmup >= total_steps > 0:
    raise ValueError(f"config.schedule.warmup_steps={warmup} must be smaller"
                     f" than the {total_steps} training steps.")
  decay_steps = int(sched_cfg.decay_steps) or max(total_steps - warmup, 1)
  if name == "constant":
    main = optax.constant_schedule(learning_rate)
  elif name == "exponential":
    main = optax.exponential_decay(learning_rate, decay_steps,
                                   sched_cfg.decay_rate)
  elif name == "step":
    main = optax.exponential_decay(learning_rate, decay_steps,
                                   sched_cfg.decay_rate, staircase=True)
  else:  # cosine
    main = optax.cosine_decay_schedule(learning_rate, decay_steps,
                                       alpha=sched_cfg.end_factor)
  if not warmup:
    return main
  ramp = optax.linear_schedule(0.0, learning_rate, warmup)
  return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(opt_cfg, schedule: optax.Schedule):
  name = opt_cfg.name
  check_choice("config.optimizer.name", name, OPTIMIZERS, "an optimizer")
  mask = decay_mask(opt_cfg.decay_mask)
  if name == "sgd":
    core = optax.sgd(schedule, momentum=opt_cfg.momentum or None,
                     nesterov=opt_cfg.nesterov)
  elif name == "adagrad":
    core = optax.adagrad(schedule, eps=opt_cfg.eps)
  elif name == "adam":
    core = optax.adam(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps)
  elif name == "adamw":
    core = optax.adamw(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps,
                       weight_decay=opt_cfg.weight_decay, mask=mask)
  elif name == "lars":
    # You et al. 2017: SGD with momentum whose per-layer step is scaled by
    # trust_coefficient * |w| / |g + wd w|. With decay_mask="kernels" biases
    # and norm scales get neither decay nor the trust ratio (Goyal et al.'s
    # and MLPerf's ResNet-50 practice).
    core = optax.lars(schedule, weight_decay=opt_cfg.weight_decay,
                      weight_decay_mask=mask or True,
                      trust_ratio_mask=mask or True,
                      trust_coefficient=opt_cfg.trust_coefficient,
                      momentum=opt_cfg.momentum, nesterov=opt_cfg.nesterov)
  else:  # lamb: You et al. 2019, Adam's update scaled per layer by |w| / |u|
    core = optax.lamb(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps,
                      weight_decay=opt_cfg.weight_decay, mask=mask)
  if opt_cfg.weight_decay and name not in DECOUPLED_DECAY:
    raise ValueError(
        f"config.optimizer.weight_decay is the decay built into"
        f" {', '.join(DECOUPLED_DECAY)}; for {name!r} use config.optimizer.l2"
        " (added to the gradient).")
  chain = []
  if opt_cfg.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(opt_cfg.grad_clip_norm))
  if opt_cfg.l2:
    chain.append(optax.add_decayed_weights(opt_cfg.l2, mask=mask))
  return optax.chain(*chain, core)


def from_config(config, schedule: optax.Schedule, rules=(), mesh=None):
  """The whole optimizer chain of a run, the one place it is built:
  config.optimizer's optimizer (`make_optimizer`), its gradients delayed
  when config.optimizer asks for asynchronous SGD (staleness, replicas), and
  under `train.step_form = "local_sgd"` run per replica as local SGD's inner
  optimizer (its replicas over the mesh's batch axes, `rules` and `mesh`)."""
  tx = make_optimizer(config.optimizer, schedule)
  tx = async_sgd.from_config(tx, config.optimizer, config.train.seed)
  if config.train.step_form == "local_sgd":
    tx = local_sgd.from_config(tx, config.train, rules, mesh)
  return tx


def linear_scaling(base_learning_rate: float, batch_size: int,
                   base_batch_size: int = 256) -> float:
  """Goyal et al. 2017's rule: the learning rate grows linearly with the batch,
  `base_learning_rate * batch_size / base_batch_size` (0.1 per 256 images for
  ResNet-50 with SGD). Pair it with a few epochs of linear warmup
  (config.schedule.warmup_steps): large rates diverge from a random start."""
  return base_learning_rate * batch_size / base_batch_size


def average_step_size(opt_cfg, step):
  """Weight of the new parameters in the running average after `step`."""
  if opt_cfg.averaging == "ema":
    # Debiased early on so the average is not stuck at the initial weights.
    return jnp.maximum(1.0 - opt_cfg.ema_decay, 1.0 / (step + 1.0))
  return 1.0 / (step + 1.0)  # polyak: the plain mean of all iterates
