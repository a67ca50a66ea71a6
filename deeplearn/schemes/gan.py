"""A generative adversarial network: two models, two optimizers, one loop.

config.scheme = "gan". A generator G (config.model.generator) maps z ~ N(0, I)
to images in [-1, 1] and a discriminator D (config.model.discriminator) scores
them (Goodfellow et al. 2014; DCGAN, Radford et al. 2016; the models are in
deeplearn/models/gan.py). Each step cuts the dataset's training batch into
`config.gan.d_steps` parts and makes one D update on each (its real images
against as many fresh fakes), then one G update through the updated D. The
losses: "non_saturating" (D: -log D(x) - log(1 - D(G(z))); G: -log D(G(z)),
Goodfellow et al.'s fix for G's vanishing gradient early on) or "hinge"
(Miyato et al. 2018). G and D each have their own optax optimizer and state,
built from config.optimizer (the DCGAN experiments: Adam, beta1 0.5) with
learning rates config.gan.g_learning_rate / d_learning_rate.

Inputs are the training batches of the existing pipeline (config.data; the
loop checkpoints the grain iterator), scaled to [-1, 1] by pp_train; the
batch is sharded over the mesh's batch axes as in supervised runs, and the
state (G, D, their batch statistics, optimizer states, RNG) is checkpointed
whole, so a run resumes bitwise.

Evaluation: D's mean probability of "real" on test images and on samples,
both losses, pixel moments and `pixel_fd` (the Fréchet distance between
8x8-pooled pixels of samples and test images); with
config.gan.classifier_workdir (a finished deeplearn classifier run on the
same dataset) also the Fréchet distance of its features (`fd`), the mean
max-probability and the entropy of its predicted-label histogram
(deeplearn/generative_metrics.py). Pictures: a grid of samples from a fixed
z and latent interpolations. The summary adds each sample's distance to its
nearest training image, beside the test images' own (memorisation).

config.gan (set in the experiment; the keys and defaults are GAN_DEFAULTS):
  d_steps              D updates per G update (>= 1)
  loss                 non_saturating | hinge
  g_learning_rate, d_learning_rate   0 = config.optimizer.learning_rate
  eval_samples         samples (and test images) each evaluation compares
  classifier_workdir   "" = no classifier-based measures
"""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from deeplearn import (config as config_lib, data, generative_metrics as gm,
                       images as images_lib, models, optim, step as step_lib)
from deeplearn.models import registry
from deeplearn.parallel import mesh as mesh_lib, sharding
from deeplearn.schemes import supervised
from deeplearn.schemes.base import Scheme

GAN_DEFAULTS = {"d_steps": 1, "loss": "non_saturating", "g_learning_rate": 0.0,
                "d_learning_rate": 0.0, "eval_samples": 1000,
                "classifier_workdir": ""}
LOSSES = ("non_saturating", "hinge")
SAMPLE_SEED = 1234  # the fixed z of every evaluation and picture
GRID, INTERPOLATIONS, INTERPOLATION_STEPS = 8, 6, 10
POOLED_SIDE = 8  # pixel_fd compares images average-pooled to at most 8x8


@flax.struct.dataclass
class GANState:
  step: jax.Array
  gen: dict  # G's params
  disc: dict  # D's params
  gen_state: dict  # G's other collections (batch_stats)
  disc_state: dict
  gen_opt: dict
  disc_opt: dict
  rng: jax.Array
  nonfinite_streak: jax.Array


def gan_settings(config) -> dict:
  """config.gan over GAN_DEFAULTS, each key and value checked (naming it)."""
  given = dict(config.get("gan") or {})
  for key in given:
    if key not in GAN_DEFAULTS:
      raise ValueError(f"config.gan.{key} is not a GAN setting; "
                       f"{config_lib.did_you_mean(key, GAN_DEFAULTS)}use"
                       f" {sorted(GAN_DEFAULTS)}.")
  s = {**GAN_DEFAULTS, **given}
  for key in ("d_steps", "eval_samples"):
    if not isinstance(s[key], int) or s[key] < 1:
      raise ValueError(f"config.gan.{key}={s[key]!r} must be >= 1.")
  for key in ("g_learning_rate", "d_learning_rate"):
    if s[key] < 0:
      raise ValueError(f"config.gan.{key}={s[key]} must be >= 0"
                       " (0: config.optimizer.learning_rate).")
  config_lib.check_choice("config.gan.loss", s["loss"], LOSSES, "a GAN loss")
  return s


def _model(config, part: str):
  cfg = config.model.get(part) if "model" in config else None
  if cfg is None:
    raise ValueError(f"config.model.{part} is missing: the GAN scheme takes"
                     " config.model.generator and config.model.discriminator,"
                     " each a registered model's config (deeplearn/models/gan.py).")
  try:
    registry.check_values(cfg)
    return models.get_model(cfg)
  except ValueError as e:  # the registry names config.model.KEY
    raise ValueError(str(e).replace("config.model.", f"config.model.{part}.")) from None


def _losses(kind: str, real_logits, fake_logits_d, fake_logits_g):
  """(D's loss, G's loss); fake_logits_d are D's on the fakes of its update."""
  if kind == "hinge":
    d = nn.relu(1 - real_logits).mean() + nn.relu(1 + fake_logits_d).mean()
    return d, -fake_logits_g.mean()
  bce = optax.sigmoid_binary_cross_entropy
  d = bce(real_logits, 1.0).mean() + bce(fake_logits_d, 0.0).mean()
  return d, bce(fake_logits_g, 1.0).mean()


def _check_range(batch_inputs, config) -> None:
  low, high = float(np.min(batch_inputs)), float(np.max(batch_inputs))
  if low < -1.001 or high > 1.001:
    raise ValueError(
        f"config.data.pp_train / pp_eval={config.data.pp_train!r} /"
        f" {config.data.pp_eval!r} give pixels in [{low:.3g}, {high:.3g}]: the"
        " generator's tanh ends in [-1, 1], so scale the data there, e.g."
        " 'standardize(127.5, 127.5)' for 0..255 images, 'standardize(8, 8)'"
        " for the 0..16 digits.")


class GAN(Scheme):
  """config.scheme = "gan"; see the module docstring."""

  def __init__(self, config, devices=None):
    self.config = config
    self.settings = s = gan_settings(config)
    for key, ok in (("train.step_form", config.train.step_form == "jit"),
                    ("train.grad_accum_steps", config.train.grad_accum_steps == 1),
                    ("optimizer.replicas", config.optimizer.replicas == 1),
                    ("optimizer.staleness", config.optimizer.staleness == 0),
                    ("optimizer.averaging", config.optimizer.averaging == "none")):
      if not ok:
        raise ValueError(f"config.{key}={config[key.split('.')[0]][key.split('.')[1]]!r}:"
                         " the GAN scheme runs the default (jit, 1, 1, 0, 'none').")
    self.gen, self.disc = _model(config, "generator"), _model(config, "discriminator")
    self.mesh = mesh = mesh_lib.make_mesh(config.mesh.to_dict(), devices)
    rules = self.rules = sharding.rules_from_config(config.sharding)
    sharding.check_rules(rules, mesh)
    shards = sharding.num_batch_shards(rules, mesh)
    config_lib.validate(config, num_batch_shards=shards,
                        process_count=jax.process_count())
    batch, k = config.data.batch_size, s["d_steps"]
    if batch % (k * shards):
      raise ValueError(
          f"config.gan.d_steps={k}: the batch (config.data.batch_size={batch})"
          f" is cut into {k} parts, one per D update, each a multiple of the"
          f" {shards} batch shards.")
    self.part = batch // k  # real images per D update; fakes per update
    self.info = info = data.get_info(config.data)
    self.num_steps = config_lib.num_train_steps(
        config, info.num_examples[config.data.train_split])
    self.examples_per_step = batch
    self.best_metric = ("fd", "min") if s["classifier_workdir"] else ("pixel_fd", "min")
    self.latent = self.gen.latent_dim
    out = jax.eval_shape(lambda: self.gen.apply(
        nn.unbox(self.gen.init(jax.random.key(0), jnp.zeros((1, self.latent)),
                               train=False)), jnp.zeros((1, self.latent)), train=False))
    if tuple(out.shape[1:]) != tuple(info.input_shape):
      raise ValueError(
          f"config.model.generator makes images of shape {tuple(out.shape[1:])},"
          f" but {info.name}'s are {tuple(info.input_shape)}: size it for them"
          " (deeplearn/models/gan.py lists the sizes).")
    lr = config.optimizer.learning_rate
    self.tx_gen, self.tx_disc = (
        optim.make_optimizer(config.optimizer, optim.make_schedule(
            config.schedule, s[key] or lr, self.num_steps))
        for key in ("g_learning_rate", "d_learning_rate"))
    self.batch_sharding = sharding.batch_sharding(rules, mesh)
    axes = sharding.batch_axes(rules, mesh)
    self._z_sharding = NamedSharding(mesh, P(axes or None, None))
    self._real = self._eval_images(s["eval_samples"])
    _check_range(self._real, config)
    abstract = jax.eval_shape(self._init_boxed, config.train.seed)
    self.state_shardings = sharding.state_shardings(abstract, rules, mesh)
    self._init = jax.jit(lambda seed: nn.unbox(self._init_boxed(seed)),
                         static_argnums=0, out_shardings=self.state_shardings)
    out = step_lib.replicated(mesh)
    self.train_step = step_lib.jit_step(
        self._train_step, mesh, (self.state_shardings, self.batch_sharding),
        (self.state_shardings, out, out), kernels=config.get("kernels"))
    self._sample = jax.jit(self._sample_fn)
    self._z_fixed, self._samples_of, self._samples = self._fixed_z(), None, {}
    self._scores = jax.jit(self._scores_fn)
    self.classifier = (Classifier(s["classifier_workdir"], config, self._real, devices)
                       if s["classifier_workdir"] else None)

  # --- state -------------------------------------------------------------------

  def _init_boxed(self, seed):
    k_gen, k_disc, rng = jax.random.split(jax.random.PRNGKey(seed), 3)
    g = dict(self.gen.init(k_gen, jnp.zeros((1, self.latent)), train=False))
    d = dict(self.disc.init(k_disc, jnp.zeros((1, *self.info.input_shape)),
                            train=False))
    gen, disc = g.pop("params"), d.pop("params")
    return GANState(step=jnp.zeros((), jnp.int32), gen=gen, disc=disc,
                    gen_state=g, disc_state=d,
                    gen_opt=self.tx_gen.init(gen), disc_opt=self.tx_disc.init(disc),
                    rng=rng, nonfinite_streak=jnp.zeros((), jnp.int32))

  def init_state(self):
    return self._init(self.config.train.seed)

  def abstract_state(self):
    return step_lib.abstract(lambda: self._init(self.config.train.seed),
                             self.state_shardings)

  # --- the step ----------------------------------------------------------------

  def _z(self, key, n):
    z = jax.random.normal(key, (n, self.latent))
    return jax.lax.with_sharding_constraint(z, self._z_sharding)

  def disc_update(self, state: GANState, real, key):
    """One D update on real [m, H, W, C] against G(z) of m fresh z: a new
    state (only D's params, statistics and optimizer state change), D's loss,
    its gradients and D's mean probabilities of "real"."""
    fake, _ = self.gen.apply({"params": state.gen, **state.gen_state},
                             self._z(key, real.shape[0]), train=True,
                             mutable=["batch_stats"])  # G's statistics kept as they were
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(disc):
      real_logits, stats = self.disc.apply({"params": disc, **state.disc_state},
                                           real, train=True, mutable=["batch_stats"])
      fake_logits, stats = self.disc.apply({"params": disc, **stats}, fake,
                                           train=True, mutable=["batch_stats"])
      loss, _ = _losses(self.settings["loss"], real_logits, fake_logits, fake_logits)
      return loss, (stats, real_logits, fake_logits)

    (loss, (stats, real_logits, fake_logits)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.disc)
    updates, disc_opt = self.tx_disc.update(grads, state.disc_opt, state.disc)
    new = state.replace(disc=optax.apply_updates(state.disc, updates),
                        disc_state={**state.disc_state, **stats}, disc_opt=disc_opt)
    probs = {"d_real": jax.nn.sigmoid(real_logits).mean(),
             "d_fake": jax.nn.sigmoid(fake_logits).mean()}
    return new, loss, grads, probs

  def gen_update(self, state: GANState, key):
    """One G update through D (in train mode, its statistics not kept): a new
    state (only G's params, statistics and optimizer state change), G's loss
    and its gradients."""
    z = self._z(key, self.part)

    def loss_fn(gen):
      fake, stats = self.gen.apply({"params": gen, **state.gen_state}, z,
                                   train=True, mutable=["batch_stats"])
      logits, _ = self.disc.apply({"params": state.disc, **state.disc_state},
                                  fake, train=True, mutable=["batch_stats"])
      _, loss = _losses(self.settings["loss"], logits, logits, logits)
      return loss, stats

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.gen)
    updates, gen_opt = self.tx_gen.update(grads, state.gen_opt, state.gen)
    new = state.replace(gen=optax.apply_updates(state.gen, updates),
                        gen_state={**state.gen_state, **stats}, gen_opt=gen_opt)
    return new, loss, grads

  def _train_step(self, state: GANState, batch):
    with nn.logical_axis_rules(self.rules):
      k = self.settings["d_steps"]
      real = batch["inputs"]  # [batch, H, W, C]
      # Part i takes every k-th image, so each part stays spread over all devices.
      parts = real.reshape(self.part, k, *real.shape[1:]).swapaxes(0, 1)
      key = jax.random.fold_in(state.rng, state.step)
      new = state
      for i in range(k):
        new, d_loss, d_grads, probs = self.disc_update(
            new, parts[i], jax.random.fold_in(key, i))
      new, g_loss, g_grads = self.gen_update(new, jax.random.fold_in(key, k))
      loss = d_loss + g_loss
      checks = step_lib.health(loss, (d_grads, g_grads), (new.gen, new.disc))
      ok = checks["finite"]
      if self.config.train.nonfinite == "skip":  # the whole update dropped
        new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
      new = new.replace(step=state.step + 1, nonfinite_streak=jnp.where(
          ok, 0, state.nonfinite_streak + 1))
      metrics = {"loss": loss, "d_loss": d_loss, "g_loss": g_loss, **probs,
                 "d_grad_norm": optax.tree.norm(d_grads),
                 "g_grad_norm": optax.tree.norm(g_grads)}
      return new, metrics, {**checks, "streak": new.nonfinite_streak}

  def nonfinite_leaf_names(self) -> list[str]:
    """Names of what health indexes: loss, D's then G's gradients (of the
    last D update and the G update), G's then D's new params."""
    shapes = jax.eval_shape(self._init, self.config.train.seed)
    names = lambda tree: [jax.tree_util.keystr(p, simple=True, separator="/")
                          for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    return (["loss"] + [f"d_grads/{n}" for n in names(shapes.disc)]
            + [f"g_grads/{n}" for n in names(shapes.gen)]
            + [f"gen/{n}" for n in names(shapes.gen)]
            + [f"disc/{n}" for n in names(shapes.disc)])

  # --- inputs ------------------------------------------------------------------

  def inputs(self):
    return iter(data.train_dataset(self.config.data, seed=self.config.train.seed,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count()))

  def next_input(self, iterator):
    return supervised.device_batch(next(iterator), self.batch_sharding)

  def _eval_images(self, n, split=None) -> np.ndarray:
    """The first n images (fewer if the split is smaller) of the eval split
    (or `split`) through pp_eval: [n, H, W, C] numpy."""
    got = []
    for batch in data.eval_dataset(self.config.data, split=split, process_index=0,
                                   process_count=1):
      got.append(batch["inputs"][batch["mask"] > 0])
      if sum(map(len, got)) >= n:
        break
    return np.concatenate(got)[:n]

  # --- evaluation --------------------------------------------------------------

  def _sample_fn(self, state, z):
    return self.gen.apply({"params": state.gen, **state.gen_state}, z, train=False)

  def _scores_fn(self, state, images):
    return self.disc.apply({"params": state.disc, **state.disc_state}, images,
                           train=False)

  def _fixed_z(self):
    """The z of every evaluation and picture, from SAMPLE_SEED: eval_samples
    for the measures, GRID^2 for the grid, and INTERPOLATIONS rows of
    INTERPOLATION_STEPS points on the lines between two z each."""
    keys = jax.random.split(jax.random.key(SAMPLE_SEED), 3)
    n = self.settings["eval_samples"]
    ends = jax.random.normal(keys[2], (2, INTERPOLATIONS, 1, self.latent))
    t = jnp.linspace(0, 1, INTERPOLATION_STEPS)[None, :, None]
    lines = (1 - t) * ends[0] + t * ends[1]  # [rows, steps, latent]
    return jnp.concatenate([jax.random.normal(keys[0], (n, self.latent)),
                            jax.random.normal(keys[1], (GRID * GRID, self.latent)),
                            lines.reshape(-1, self.latent)])

  def samples(self, state) -> dict[str, np.ndarray]:
    """{"eval", "grid", "interpolation"}: G's images [n, H, W, C] in [-1, 1]
    of the fixed z (one call, one compilation), kept for the state's step."""
    step = int(jax.device_get(state.step))
    if self._samples_of != step:
      x = np.asarray(self._sample(state, self._z_fixed))
      n = self.settings["eval_samples"]
      self._samples = {"eval": x[:n], "grid": x[n:n + GRID * GRID],
                       "interpolation": x[n + GRID * GRID:]}
      self._samples_of = step
    return self._samples

  def evaluate(self, state) -> dict[str, float]:
    fake = self.samples(state)["eval"]
    real_logits = self._scores(state, self._real)
    fake_logits = self._scores(state, fake)
    d_loss, g_loss = _losses(self.settings["loss"], real_logits, fake_logits,
                             fake_logits)
    out = {"d_real": jax.nn.sigmoid(real_logits).mean(),
           "d_fake": jax.nn.sigmoid(fake_logits).mean(),
           "d_loss": d_loss, "g_loss": g_loss,
           "pixel_mean": fake.mean(), "pixel_std": fake.std(),
           "real_pixel_mean": self._real.mean(), "real_pixel_std": self._real.std(),
           "pixel_fd": gm.frechet_distance(_pooled(fake), _pooled(self._real))}
    if self.classifier is not None:
      out.update(self.classifier.measures(fake))
    return {k: float(v) for k, v in out.items()}

  def images(self, state) -> dict:
    x = self.samples(state)
    return {name: _squeeze(images_lib.grid((x[key] + 1) / 2, cols))  # [-1, 1] -> [0, 1]
            for name, key, cols in (("samples", "grid", GRID),
                                    ("interpolation", "interpolation", INTERPOLATION_STEPS))}

  def describe(self, state) -> str:
    cfg = self.config.model
    return (f"GAN {cfg.generator.name} ({step_lib.num_params(state.gen):,} params)"
            f" vs {cfg.discriminator.name} ({step_lib.num_params(state.disc):,})"
            f" on {self.info.name} | {self.settings['loss']} loss,"
            f" {self.settings['d_steps']} D step(s) per G step |"
            f" {self.mesh.size} devices, mesh {mesh_lib.describe(self.mesh)}")

  def finish(self, state, workdir: str, summary: dict) -> dict:
    """Parameter counts, and the memorisation check: each sample's distance
    to its nearest training image, beside the test images' own."""
    del workdir, summary
    train = self._eval_images(self.info.num_examples[self.config.data.train_split],
                              split=self.config.data.train_split)
    fake = self.samples(state)["eval"]
    return {"num_params_generator": step_lib.num_params(state.gen),
            "num_params_discriminator": step_lib.num_params(state.disc),
            "nn_train_distance_samples": float(
                gm.nearest_neighbour_distances(fake, train).mean()),
            "nn_train_distance_test": float(
                gm.nearest_neighbour_distances(self._real, train).mean())}


def _pooled(x) -> np.ndarray:
  """[n, H, W, C] average-pooled to at most POOLED_SIDE per side, flattened."""
  x = np.asarray(x, np.float64)
  f = max(1, x.shape[1] // POOLED_SIDE)
  h, w = x.shape[1] // f, x.shape[2] // f
  x = x[:, :h * f, :w * f].reshape(len(x), h, f, w, f, x.shape[3]).mean((2, 4))
  return x.reshape(len(x), -1)


def _squeeze(image):
  return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


class Classifier:
  """A finished deeplearn classifier run (read-only) judging samples: the
  Fréchet distance of its penultimate features between samples and test
  images, its mean max-probability and its label histogram's entropy.

  Samples are in the GAN's pixel scale (pp_eval, [-1, 1]); the classifier
  reads its own (its pp_eval, e.g. standardized). Both are affine in the raw
  pixels, so the map between them is fitted per channel on the test images
  read both ways, and checked exact."""

  def __init__(self, workdir: str, gan_config, real: np.ndarray, devices=None):
    key = "config.gan.classifier_workdir"
    finished = supervised.load_finished(workdir, devices, key=key)
    config = finished.config
    if config.data.dataset != gan_config.data.dataset:
      raise ValueError(f"{key}={workdir!r} classifies {config.data.dataset!r},"
                       f" not {gan_config.data.dataset!r}.")
    self.run = run = finished.run
    self.variables = finished.variables
    self.num_classes = run.info.num_classes
    theirs = np.concatenate([b["inputs"][b["mask"] > 0] for b in data.eval_dataset(
        config.data, process_index=0, process_count=1)])[:len(real)]
    self.scale, self.shift = _affine_fit(real, theirs.reshape(real.shape), key)
    self._apply = jax.jit(self._features)
    self.real_stats = gm.gaussian_fit(self.features(real)[0])

  def _features(self, x):
    """(penultimate features [n, d], probabilities [n, classes]): the input
    of the model's last dense layer, taken with flax's method interception."""
    seen = []

    def grab(next_fun, args, kwargs, context):
      if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
        seen.append(args[0])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(grab):
      logits = self.run.task.model.apply(self.variables, x, train=False)
    return seen[-1].reshape(x.shape[0], -1), jax.nn.softmax(logits)

  def features(self, gan_images, chunk: int = 500):
    x = np.asarray(gan_images) * self.scale + self.shift
    parts = [jax.device_get(self._apply(x[i:i + chunk]))
             for i in range(0, len(x), chunk)]
    return (np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]))

  def measures(self, samples) -> dict[str, float]:
    feats, probs = self.features(samples)
    return {"fd": gm.frechet_gaussians(*gm.gaussian_fit(feats), *self.real_stats),
            "mean_max_prob": gm.mean_max_prob(probs),
            "label_entropy": gm.label_entropy(probs.argmax(1), self.num_classes)}


def _affine_fit(ours, theirs, key):
  """Per-channel scale and shift with theirs = ours * scale + shift, checked."""
  c = ours.shape[-1]
  a, b = ours.reshape(-1, c), theirs.reshape(-1, c)
  scale, shift = np.zeros(c, np.float32), np.zeros(c, np.float32)
  for i in range(c):
    scale[i], shift[i] = np.polyfit(a[:, i], b[:, i], 1)
  error = np.abs(a * scale + shift - b).max()
  if error > 1e-3 * max(1.0, np.abs(b).max()):
    raise ValueError(f"{key}: the classifier's pp_eval is not an affine map of"
                     f" this run's (largest misfit {error:.3g}): it must read the"
                     " same pixels, only scaled.")
  return scale, shift

