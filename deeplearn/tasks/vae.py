"""The VAE's objective and evaluation (Kingma & Welling, ICLR 2014; deeplearn/models/vae.py).

Training maximises the ELBO, E_q[log p(x | z)] - KL(q(z | x) || N(0, I)), with one
reparameterised sample z = mean + std * eps and the KL in closed form; the loss is
-ELBO in nats per example. Batches: `inputs` float32 [batch, *shape]. From `config.loss`:

  binarize      "dynamic": each step draws x ~ Bernoulli(grey level), as the
                binarised-MNIST benchmark does (the default for the Bernoulli
                likelihood); "none": the data as it is (the default otherwise)
  beta          weight of the KL term in training (1 = the ELBO; a beta-VAE otherwise)
  iw_samples    k of the importance-sampled log-likelihood in evaluation (Burda et al.,
                ICLR 2016): log p(x) >= log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q,
                a bound that tightens toward log p(x) as k grows
  iw_chunk      samples per chunk: the k samples run under `lax.scan` in chunks,
                their log-sum-exp accumulated, so memory is one chunk's
  num_levels    grey levels of the data for the discretised logistic (digits: 17)

Evaluation is deterministic: the interface gives it no rng, so the binarisation
of the test set, the ELBO's sample and the k importance samples come from a fixed
key (EVAL_SEED); every evaluation of the same weights gives the same numbers. Its
metrics, in nats per example: `elbo`, `reconstruction` (-E_q log p(x | z)), `kl`,
`log_likelihood` (the k-sample estimate), and `mse` of the decoder's mean at z =
mean(x) against the (grey) inputs, per value.
"""

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from deeplearn import images as images_lib
from deeplearn.config import check_choice
from deeplearn.models.vae import LIKELIHOODS
from deeplearn.tasks.common import Task
from deeplearn.tasks.reconstruction import (EVAL_SEED, PICTURES, check_unit_range,
                                            loss_settings, pictures, with_data_shape)

LOG_2PI = math.log(2 * math.pi)


def log_likelihood(name: str, out, x, sigma: float = 0.1, levels: int = 256):
  """log p(x | z) per value, from the decoder's outputs out [..., P] for x [...]."""
  loc = out[..., 0]
  if name == "bernoulli":
    return x * loc - jax.nn.softplus(loc)
  if name == "gaussian":
    return -0.5 * jnp.square((x - loc) / sigma) - math.log(sigma) - 0.5 * LOG_2PI
  log_s = jnp.maximum(out[..., 1], -7.0)
  if name == "gaussian_learned":
    return -0.5 * jnp.square((x - loc) * jnp.exp(-log_s)) - log_s - 0.5 * LOG_2PI
  # Discretised logistic: the mass of the bin [x - h, x + h] (h half a level), the
  # lowest and highest bins extended to -inf and +inf (PixelCNN++'s).
  h, inv_s, centred = 0.5 / (levels - 1), jnp.exp(-log_s), x - loc
  plus, minus = inv_s * (centred + h), inv_s * (centred - h)
  delta = jax.nn.sigmoid(plus) - jax.nn.sigmoid(minus)
  mid = inv_s * centred  # where the bin's mass underflows: the density times the width
  log_mid = mid - log_s - 2 * jax.nn.softplus(mid) + math.log(2 * h)
  inner = jnp.where(delta > 1e-5, jnp.log(jnp.maximum(delta, 1e-12)), log_mid)
  return jnp.where(x < h, jax.nn.log_sigmoid(plus),
                   jnp.where(x > 1 - h, -jax.nn.softplus(minus), inner))


def decoder_mean(name: str, out):
  """The decoder's mean per value (the logistic's location clipped to the data's
  [0, 1]: its bins beyond are the end bins'), for pictures and the mse."""
  if name == "bernoulli":
    return jax.nn.sigmoid(out[..., 0])
  return jnp.clip(out[..., 0], 0, 1) if name == "logistic" else out[..., 0]


def gaussian_kl(mean, log_var):
  """KL(N(mean, exp(log_var)) || N(0, I)) per example: [batch]."""
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_var) - 1 - log_var, axis=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class VAE(Task):
  loss_config: Any = None  # config.loss
  best_metric: ClassVar[tuple[str, str]] = ("log_likelihood", "max")
  DEFAULTS: ClassVar[dict] = {"binarize": "", "beta": 1.0, "iw_samples": 1000,
                              "iw_chunk": 100, "num_levels": 256}

  def __post_init__(self):
    if not hasattr(self.model, "latent_size"):
      raise ValueError(f"config.task='vae' needs the vae model, not"
                       f" config.model.name={type(self.model).__name__!r}.")
    object.__setattr__(self, "model", with_data_shape(self.model, self.info))
    m, c = self.model, loss_settings(self.loss_config, self.DEFAULTS)
    check_choice("config.model.likelihood", m.likelihood, LIKELIHOODS, "a likelihood")
    c["binarize"] = c["binarize"] or ("dynamic" if m.likelihood == "bernoulli" else "none")
    check_choice("config.loss.binarize", c["binarize"], ("dynamic", "none"))
    if c["binarize"] == "dynamic" and m.likelihood != "bernoulli":
      raise ValueError(f"config.loss.binarize='dynamic' makes binary data, for the"
                       f" Bernoulli likelihood, not config.model.likelihood={m.likelihood!r}.")
    for key, low in (("iw_samples", 1), ("iw_chunk", 1), ("num_levels", 2)):
      if int(c[key]) != c[key] or c[key] < low:
        raise ValueError(f"config.loss.{key}={c[key]} must be an integer >= {low}.")
    c["iw_chunk"] = min(c["iw_chunk"], c["iw_samples"])
    if c["iw_samples"] % c["iw_chunk"]:
      raise ValueError(f"config.loss.iw_samples={c['iw_samples']} must be a multiple of"
                       f" config.loss.iw_chunk={c['iw_chunk']}.")
    if c["beta"] < 0:
      raise ValueError(f"config.loss.beta={c['beta']} must be >= 0.")
    if m.sigma <= 0:
      raise ValueError(f"config.model.sigma={m.sigma} must be > 0.")
    object.__setattr__(self, "settings", c)

  def check_data(self, batch, key: str) -> None:
    """The data suits the likelihood: a ValueError naming the key otherwise."""
    name, c = self.model.likelihood, self.settings
    what = f"config.model.likelihood={name!r}"
    if name == "bernoulli":
      check_unit_range(batch, key, what, binary=c["binarize"] == "none")
    elif name == "logistic":
      check_unit_range(batch, key, what)
      x = np.asarray(batch["inputs"]) * (c["num_levels"] - 1)
      if not np.allclose(x, np.round(x), atol=1e-3):
        raise ValueError(f"{what} models config.loss.num_levels={c['num_levels']} grey"
                         f" levels k / {c['num_levels'] - 1}, but {key} gives values between"
                         " them: set num_levels to the data's (digits: 17, 8-bit: 256).")

  def init_variables(self, rng, batch_size: int = 1):
    return self.model.init({"params": rng},
                           jnp.zeros((batch_size, *self.info.input_shape), jnp.float32))

  def _log_px_z(self, out, x):
    """log p(x | z) summed over the values: [...] for out [..., *shape, P]."""
    lp = log_likelihood(self.model.likelihood, out, x, self.model.sigma,
                        self.settings["num_levels"])
    return jnp.sum(lp, axis=tuple(range(lp.ndim - x.ndim + 1, lp.ndim)))

  def _binarized(self, x, rng):
    if self.settings["binarize"] == "dynamic":
      return jax.random.bernoulli(rng, x).astype(x.dtype)
    return x

  def _elbo_terms(self, params, x, rng):
    mean, log_var = self.model.apply({"params": params}, x, method="encode")
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape)
    out = self.model.apply({"params": params}, z, method="decode")
    return self._log_px_z(out, x), gaussian_kl(mean, log_var), mean, log_var

  def loss(self, params, model_state, batch, rng):
    """-ELBO (with beta on the KL) in nats, averaged over the batch."""
    bin_rng, z_rng = jax.random.split(rng)
    x = self._binarized(batch["inputs"], bin_rng)
    log_px, kl, _, _ = self._elbo_terms(params, x, z_rng)
    total = jnp.sum(-log_px + self.settings["beta"] * kl)
    sums = {"loss": total, "elbo": jnp.sum(log_px - kl), "reconstruction": -jnp.sum(log_px),
            "kl": jnp.sum(kl), "count": jnp.asarray(x.shape[0], jnp.float32)}
    return total / sums["count"], (sums, model_state)

  def importance_log_likelihood(self, params, x, mean, log_var, rng):
    """log (1/k) sum_i p(x, z_i) / q(z_i | x) per example [batch], k = iw_samples,
    computed iw_chunk samples at a time with a running log-sum-exp."""
    k, chunk = self.settings["iw_samples"], self.settings["iw_chunk"]
    std = jnp.exp(0.5 * log_var)

    def one(acc, j):
      eps = jax.random.normal(jax.random.fold_in(rng, j), (chunk, *mean.shape))
      z = mean + std * eps  # [chunk, batch, latent]
      out = self.model.apply({"params": params}, z.reshape(-1, z.shape[-1]), method="decode")
      log_px = self._log_px_z(out.reshape(chunk, x.shape[0], *out.shape[1:]), x)
      log_pz = jnp.sum(norm.logpdf(z), axis=-1)
      log_qz = jnp.sum(norm.logpdf(eps) - jnp.log(std), axis=-1)
      return jnp.logaddexp(acc, jax.nn.logsumexp(log_px + log_pz - log_qz, axis=0)), None

    acc = jnp.full(x.shape[:1], -jnp.inf)
    acc, _ = jax.lax.scan(one, acc, jnp.arange(k // chunk))
    return acc - math.log(k)

  def eval_sums(self, params, model_state, batch):
    bin_rng, z_rng, iw_rng = jax.random.split(jax.random.PRNGKey(EVAL_SEED), 3)
    w, grey = batch["mask"], batch["inputs"]
    x = self._binarized(grey, bin_rng)
    log_px, kl, mean, log_var = self._elbo_terms(params, x, z_rng)
    log_lik = self.importance_log_likelihood(params, x, mean, log_var, iw_rng)
    recon = self.decode_mean(params, mean)
    mse = jnp.mean(jnp.square(recon - grey), axis=tuple(range(1, grey.ndim)))
    return {"elbo": jnp.sum(w * (log_px - kl)), "reconstruction": -jnp.sum(w * log_px),
            "kl": jnp.sum(w * kl), "log_likelihood": jnp.sum(w * log_lik),
            "mse": jnp.sum(w * mse), "count": jnp.sum(w)}

  def finalize(self, sums):
    count = jnp.maximum(sums["count"], 1)
    return {k: v / count for k, v in sums.items() if k != "count"}

  def decode_mean(self, params, z):
    """The decoder's mean per value at latents z [n, latent]: [n, *shape]."""
    return decoder_mean(self.model.likelihood,
                        self.model.apply({"params": params}, z, method="decode"))

  def prior_samples(self, params, n: int, rng):
    """n samples of the model, z ~ N(0, I) through the decoder's mean: [n, *shape]
    in the data's scale (what the pictures show, and what a judge classifies)."""
    return self.decode_mean(params, jax.random.normal(rng, (n, self.model.latent_size)))

  def images(self, params, model_state, batch) -> dict:
    """Prior samples, reconstructions, latent interpolations and (2-D latents) the
    latent map: decoder means, from a fixed key."""
    del model_state
    x = jnp.asarray(batch["inputs"][:PICTURES])
    if pictures(x) is None:
      return {}
    decode = lambda z: pictures(self.decode_mean(params, z))  # noqa: E731
    size = self.model.latent_size
    mean, _ = self.model.apply({"params": params}, x, method="encode")
    samples = pictures(self.prior_samples(params, 64, jax.random.PRNGKey(EVAL_SEED)))
    out = {"samples": images_lib.grid(samples, cols=8),
           "reconstructions": images_lib.grid(
               np.concatenate([pictures(x), decode(mean)]), cols=len(x))}
    pairs = len(x) // 2
    t = jnp.linspace(0, 1, 10)[None, :, None]  # [1, steps, 1]
    path = (1 - t) * mean[0:2 * pairs:2, None] + t * mean[1:2 * pairs:2, None]
    out["interpolations"] = images_lib.grid(decode(path.reshape(-1, size)), cols=10)
    if size == 2:  # Kingma & Welling's figure: z on a grid of the prior's quantiles
      q = norm.ppf(jnp.linspace(0.05, 0.95, 15))
      z = jnp.stack(jnp.meshgrid(q, q[::-1]), axis=-1).reshape(-1, 2)
      out["latent_map"] = images_lib.grid(decode(z), cols=15)
    return out
