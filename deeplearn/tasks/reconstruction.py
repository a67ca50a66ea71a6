"""Reconstruction: an autoencoder rebuilds its input (deeplearn/models/autoencoder.py).

Batches: `inputs` float32 [batch, *shape] in [0, 1] (checked on the first train
and eval batches before anything compiles). The loss is the mean squared error
per value plus, from `config.loss`:

  sparsity_l1      weight of the code's mean L1 norm, sum_j |h_j|
  sparsity_kl      weight beta of the KL sparsity penalty (Ng, CS294A notes):
                   sum_j KL(rho || rho_hat_j), rho_hat_j the batch's mean
                   activation of code unit j; needs code_activation="sigmoid"
  sparsity_target  rho, the target activation rate (0.05)
  noise            "none", "mask" (masking noise: each value zeroed with
                   probability noise_level) or "gaussian" (x + noise_level * N(0, 1)):
                   the denoising autoencoder (Vincent et al., ICML 2008), which
                   reads the corrupted input and is scored on the clean one
  noise_level      0.25

Evaluation is deterministic: the test set's noise is drawn from a fixed key
(EVAL_SEED), so every evaluation corrupts the test set alike. Metrics: `mse` (per
value), `psnr` (dB, peak 1, averaged over examples) of the reconstructions of the
(noisy, when training with noise) test inputs against the clean ones,
`psnr_input` (the noisy inputs' own, the baseline a denoiser must beat),
`mean_code` (mean code activation).
"""

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from deeplearn import images as images_lib
from deeplearn.config import check_choice
from deeplearn.tasks.common import Task

EVAL_SEED = 0  # evaluation's fixed key: the interface gives eval no rng
NOISES = ("none", "mask", "gaussian")
PICTURES = 16  # examples pictured


def with_data_shape(model, info):
  """The model with data_shape = the dataset's, or a ValueError if it names another."""
  shape = tuple(info.input_shape)
  if not model.data_shape:
    return model.clone(data_shape=shape)
  if tuple(model.data_shape) != shape:
    raise ValueError(f"config.model.data_shape={tuple(model.data_shape)}, but {info.name}'s"
                     f" inputs are {shape}: leave it () for the dataset's.")
  return model


def check_unit_range(batch, key: str, what: str, binary: bool = False) -> None:
  """Raises naming `key` unless the batch's inputs lie in [0, 1] (or are 0 / 1)."""
  x = np.asarray(batch["inputs"])
  if "mask" in batch:
    x = x[np.asarray(batch["mask"]) > 0]
  low, high = float(x.min()), float(x.max())
  if low < 0 or high > 1:
    raise ValueError(f"{what} needs inputs in [0, 1], but {key} gives values in"
                     f" [{low:.4g}, {high:.4g}]: scale them, e.g. 'scale(1/255)' for"
                     " 8-bit images or 'scale(1/16)' for digits.")
  if binary and not np.all((x == 0) | (x == 1)):
    raise ValueError(f"{what} needs binary inputs, but {key} gives grey levels: set"
                     " config.loss.binarize='dynamic' to binarise them, or choose"
                     " another config.model.likelihood.")


def loss_settings(given, defaults: dict) -> dict:
  """config.loss's keys of a task (label_smoothing aside), defaults filled in; an
  unknown key raises, naming it."""
  given = dict(given.to_dict() if hasattr(given, "to_dict") else given or {})
  given.pop("label_smoothing", None)
  for key in given:
    check_choice("config.loss key", key, sorted(defaults), "a key of this task")
  return {**defaults, **given}


def corrupt(x, rng, noise: str, level: float):
  """x with masking or additive Gaussian noise (`noise` in NOISES)."""
  if noise == "mask":
    return jnp.where(jax.random.bernoulli(rng, level, x.shape), 0.0, x)
  if noise == "gaussian":
    return x + level * jax.random.normal(rng, x.shape, x.dtype)
  return x


def kl_sparsity(codes, rho: float):
  """sum_j KL(Bernoulli(rho) || Bernoulli(rho_hat_j)), rho_hat = mean code over the batch."""
  rho_hat = jnp.clip(jnp.mean(codes, axis=0), 1e-6, 1 - 1e-6)  # [code]
  return jnp.sum(rho * jnp.log(rho / rho_hat)
                 + (1 - rho) * jnp.log((1 - rho) / (1 - rho_hat)))


def pictures(x) -> np.ndarray:
  """[N, H, W, 1] -> [N, H, W] (grey); [N, H, W, 3] stays; else None (not images)."""
  x = np.asarray(x)
  if x.ndim == 4 and x.shape[-1] == 1:
    return x[..., 0]
  return x if x.ndim in (3, 4) else None


@dataclasses.dataclass(frozen=True, eq=False)
class Reconstruction(Task):
  loss_config: Any = None  # config.loss
  best_metric: ClassVar[tuple[str, str]] = ("mse", "min")
  DEFAULTS: ClassVar[dict] = {"sparsity_l1": 0.0, "sparsity_kl": 0.0,
                              "sparsity_target": 0.05, "noise": "none",
                              "noise_level": 0.25}

  def __post_init__(self):
    if not hasattr(self.model, "code_activation"):
      raise ValueError(f"config.task='reconstruction' needs an autoencoder model, not"
                       f" config.model.name={type(self.model).__name__!r}.")
    object.__setattr__(self, "model", with_data_shape(self.model, self.info))
    c = loss_settings(self.loss_config, self.DEFAULTS)
    object.__setattr__(self, "settings", c)
    check_choice("config.loss.noise", c["noise"], NOISES, "a noise")
    for key in ("sparsity_l1", "sparsity_kl"):
      if c[key] < 0:
        raise ValueError(f"config.loss.{key}={c[key]} must be >= 0.")
    if not 0 < c["sparsity_target"] < 1:
      raise ValueError(f"config.loss.sparsity_target={c['sparsity_target']} must be in (0, 1).")
    if c["sparsity_kl"] and self.model.code_activation != "sigmoid":
      raise ValueError(
          f"config.loss.sparsity_kl={c['sparsity_kl']} treats codes as activation rates in"
          f" (0, 1): set config.model.code_activation='sigmoid', not"
          f" {self.model.code_activation!r}.")
    if c["noise"] == "mask" and not 0 < c["noise_level"] < 1:
      raise ValueError(f"config.loss.noise_level={c['noise_level']} is masking noise's"
                       " probability of zeroing a value: it must be in (0, 1).")
    if c["noise"] == "gaussian" and c["noise_level"] <= 0:
      raise ValueError(f"config.loss.noise_level={c['noise_level']} is the Gaussian noise's"
                       " standard deviation: it must be > 0.")

  def check_data(self, batch, key: str) -> None:
    if self.model.output_activation == "sigmoid":
      check_unit_range(batch, key, "config.model.output_activation='sigmoid'")

  def init_variables(self, rng, batch_size: int = 1):
    return self.model.init({"params": rng},
                           jnp.zeros((batch_size, *self.info.input_shape), jnp.float32))

  def _sums(self, params, x, noisy, weights):
    recon, code = self.model.apply({"params": params}, noisy)
    axes = tuple(range(1, x.ndim))
    mse = jnp.mean(jnp.square(recon - x), axis=axes)  # [batch]
    psnr = lambda e: -10 * jnp.log10(jnp.maximum(e, 1e-10))  # noqa: E731 (peak 1)
    sums = {"mse": jnp.sum(weights * mse),
            "psnr": jnp.sum(weights * psnr(mse)),
            "mean_code": jnp.sum(weights * jnp.mean(code, axis=-1)),
            "count": jnp.sum(weights)}
    if self.settings["noise"] != "none":
      sums["psnr_input"] = jnp.sum(weights * psnr(jnp.mean(jnp.square(noisy - x), axis=axes)))
    return sums, code

  def loss(self, params, model_state, batch, rng):
    """Mean squared error per value + the configured sparsity penalties."""
    c, x = self.settings, batch["inputs"]
    noisy = corrupt(x, rng, c["noise"], c["noise_level"])
    sums, code = self._sums(params, x, noisy, jnp.ones(x.shape[0], jnp.float32))
    total = sums["mse"]
    if c["sparsity_l1"]:
      sums["l1"] = jnp.sum(jnp.abs(code))
      total = total + c["sparsity_l1"] * sums["l1"]
    if c["sparsity_kl"]:  # a batch quantity: as a sum, times the count
      sums["kl_sparsity"] = kl_sparsity(code, c["sparsity_target"]) * sums["count"]
      total = total + c["sparsity_kl"] * sums["kl_sparsity"]
    sums["loss"] = total
    return total / sums["count"], (sums, model_state)

  def eval_sums(self, params, model_state, batch):
    c, x = self.settings, batch["inputs"]
    noisy = corrupt(x, jax.random.PRNGKey(EVAL_SEED), c["noise"], c["noise_level"])
    return self._sums(params, x, noisy, batch["mask"])[0]

  def finalize(self, sums):
    count = jnp.maximum(sums["count"], 1)
    return {k: v / count for k, v in sums.items() if k != "count"}

  def images(self, params, model_state, batch) -> dict:
    """{"reconstructions": originals (then the noisy inputs) above, reconstructions below}."""
    del model_state
    c, x = self.settings, jnp.asarray(batch["inputs"][:PICTURES])
    if pictures(x) is None:
      return {}
    noisy = corrupt(x, jax.random.PRNGKey(EVAL_SEED), c["noise"], c["noise_level"])
    recon, _ = self.model.apply({"params": params}, noisy)
    rows = [x] + ([noisy] if c["noise"] != "none" else []) + [recon]
    return {"reconstructions": images_lib.grid(
        np.concatenate([pictures(r) for r in rows]), cols=len(x))}
