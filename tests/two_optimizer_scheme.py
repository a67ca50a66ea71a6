"""A test-only scheme with two optimizers that alternate: a tiny GAN.

It proves the scheme interface (deeplearn/schemes/base.py) fits a step that
is not "one optimizer, one batch, one loss": a generator x = a z + b and a
discriminator D(x) = sigmoid(w . [x, x^2] + c) play Goodfellow et al.'s game
on samples of N(3, 0.5^2), each with its own optax optimizer and state; each
step updates the discriminator on real and generated samples, then the
generator through the updated discriminator (the non-saturating loss). The
real samples and noise are drawn from the seed and the step index alone, so
the input position is all the loop has to checkpoint besides the state.

  config.scheme = "two_optimizer_scheme:TwoOptimizer"  (tests/ on sys.path)
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from deeplearn import config as config_lib, step as step_lib
from deeplearn.parallel import mesh as mesh_lib
from deeplearn.schemes.base import Position, Scheme

MEAN, STD = 3.0, 0.5  # the data distribution the generator should match


def get_config():
  config = config_lib.default_config()
  config.scheme = "two_optimizer_scheme:TwoOptimizer"
  config.model = ml_collections.ConfigDict({"name": "tiny_gan"})
  config.data.batch_size = 64
  config.optimizer.learning_rate = 0.05
  config.train.update(num_steps=300, log_every=10, eval_every=100,
                      checkpoint_every=25, keep_checkpoints=3, progress=False)
  return config


def generate(gen, z):
  return gen["a"] * z + gen["b"]


def discriminate(disc, x):  # logits of "real"
  return disc["w"][0] * x + disc["w"][1] * x * x + disc["c"]


class TwoOptimizer(Scheme):
  best_metric = ("mean_error", "min")

  def __init__(self, config, devices=None):
    self.config = config
    devices = list(jax.devices() if devices is None else devices)[:1]
    self.mesh = mesh_lib.make_mesh({"data": 1}, devices)
    self.num_steps = config.train.num_steps
    self.examples_per_step = config.data.batch_size
    self._replicated = step_lib.replicated(self.mesh)
    lr, batch = config.optimizer.learning_rate, config.data.batch_size
    self.tx_gen, self.tx_disc = optax.adam(lr), optax.sgd(lr, momentum=0.5)
    tx_gen, tx_disc = self.tx_gen, self.tx_disc

    def train_step(state, inputs):
      key = jax.random.fold_in(state["rng"], inputs["index"])
      k_real, k_fake, k_gen = jax.random.split(key, 3)
      real = MEAN + STD * jax.random.normal(k_real, (batch,))

      def disc_loss(disc):  # -log D(real) - log(1 - D(fake))
        fake = generate(state["gen"], jax.random.normal(k_fake, (batch,)))
        return (optax.sigmoid_binary_cross_entropy(
            discriminate(disc, real), 1.0).mean()
                + optax.sigmoid_binary_cross_entropy(
                    discriminate(disc, fake), 0.0).mean())

      d_loss, d_grads = jax.value_and_grad(disc_loss)(state["disc"])
      updates, disc_opt = tx_disc.update(d_grads, state["disc_opt"])
      disc = optax.apply_updates(state["disc"], updates)

      def gen_loss(gen):  # non-saturating: -log D(G(z))
        fake = generate(gen, jax.random.normal(k_gen, (batch,)))
        return optax.sigmoid_binary_cross_entropy(
            discriminate(disc, fake), 1.0).mean()

      g_loss, g_grads = jax.value_and_grad(gen_loss)(state["gen"])
      updates, gen_opt = tx_gen.update(g_grads, state["gen_opt"])
      gen = optax.apply_updates(state["gen"], updates)
      new = {**state, "gen": gen, "disc": disc, "gen_opt": gen_opt,
             "disc_opt": disc_opt}
      loss = d_loss + g_loss
      checks = step_lib.health(loss, (d_grads, g_grads), (gen, disc))
      return new, {"loss": loss, "d_loss": d_loss, "g_loss": g_loss}, {
          **checks, "streak": (~checks["finite"]).astype(jnp.int32)}

    self.train_step = step_lib.jit_step(
        train_step, self.mesh, (self._replicated, self._replicated),
        self._replicated)

  def init_state(self):
    init_key, rng = jax.random.split(jax.random.key(self.config.train.seed))
    gen = {"a": jnp.ones(()), "b": jnp.zeros(())}
    disc = {"w": 0.1 * jax.random.normal(init_key, (2,)), "c": jnp.zeros(())}
    return jax.device_put(
        {"gen": gen, "disc": disc, "gen_opt": self.tx_gen.init(gen),
         "disc_opt": self.tx_disc.init(disc),
         "rng": jax.random.key_data(rng)}, self._replicated)

  def abstract_state(self):
    return step_lib.abstract(self.init_state, self._replicated)

  def inputs(self):
    return Position()

  def next_input(self, iterator):
    return next(iterator)

  def nonfinite_leaf_names(self):
    return ["loss", "d_grads/c", "d_grads/w", "g_grads/a", "g_grads/b",
            "gen/a", "gen/b", "disc/c", "disc/w"]

  def evaluate(self, state):
    z = jax.random.normal(jax.random.key(1234), (10_000,))
    x = generate(jax.device_get(state["gen"]), z)
    return {"mean_error": float(abs(x.mean() - MEAN)),
            "std": float(x.std())}

  def describe(self, state):
    return f"tiny GAN, two optimizers | {self.num_steps} steps"
