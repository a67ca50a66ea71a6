"""Samples text from a trained character language model, with a temperature.

  python -m deeplearn.sample --workdir runs/lstm --temperature 0.8 --length 500 --prompt "ROMEO:"

Reads the run's stored config (JSON, never executed), restores the newest
checkpoint (or --step) as deeplearn.evaluate does, and prints the prompt and
its continuation. Works for every language model: a recurrent one (rnn_lm)
carries its state from token to token; any other (transformer, ngram_mlp)
re-reads a window of its last `max_len` tokens (or `config.data.seq_len`)
at every step. Temperature T divides the logits: T < 1 sharpens the
distribution, T > 1 flattens it, T = 0 is greedy (argmax).
"""

import functools
import os

from absl import flags
import jax
import jax.numpy as jnp

from deeplearn import checkpoint, cli, config as config_lib, step as step_lib, train
from deeplearn.schemes import supervised
from deeplearn.models.rnn import RNNLM


def _draw(rng, logits, temperature: float):  # logits [batch, vocab] -> [batch]
  if temperature <= 0:
    return jnp.argmax(logits, -1)
  return jax.random.categorical(rng, logits / temperature, axis=-1)


@functools.partial(jax.jit, static_argnames=("model", "length", "temperature", "window"))
def sample(model, variables, prompt, rng, *, length: int, temperature: float = 1.0,
           window: int = 0):
  """prompt int [batch, p] (p >= 1) -> the next `length` tokens [batch, length].

  `window`: the context a non-recurrent model sees (default its `max_len`).
  """
  batch, p = prompt.shape
  rngs = jax.random.split(rng, length)
  if isinstance(model, RNNLM):
    carry, logits = model.apply(variables, prompt, train=False, return_carry=True)

    def step(state, rng):
      carry, logits = state
      token = _draw(rng, logits, temperature)
      carry, logits = model.apply(variables, token[:, None], train=False, carry=carry,
                                  return_carry=True)
      return (carry, logits[:, -1]), token

    _, tokens = jax.lax.scan(step, (carry, logits[:, -1]), rngs)
    return tokens.T

  window = window or model.max_len
  buffer = jnp.concatenate([prompt, jnp.zeros((batch, length), prompt.dtype)], 1)

  def step(buffer, xs):
    rng, n = xs  # n tokens known so far
    start = jnp.maximum(n - window, 0)
    seen = jax.lax.dynamic_slice_in_dim(buffer, start, min(window, buffer.shape[1]), 1)
    logits = model.apply(variables, seen, train=False)  # causal: the tail is ignored
    token = _draw(rng, jnp.take(logits, n - 1 - start, axis=1), temperature)
    return jax.lax.dynamic_update_slice_in_dim(buffer, token[:, None], n, 1), None

  buffer, _ = jax.lax.scan(step, buffer, (rngs, p + jnp.arange(length)))
  return buffer[:, p:]


def restore(workdir: str, step: int | None = None):
  """-> (model, variables, vocab, config) of the run in `workdir`."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = config_lib.from_json(f.read())
  run = supervised.build(config)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {ckpt.directory}.")
  state = ckpt.restore(step, step_lib.abstract_state(run))
  ckpt.close()
  params = state.params if state.avg_params is None else state.avg_params
  if not run.info.vocab:
    raise ValueError(f"{config.data.dataset} is not a character language model dataset")
  return run.task.model, {"params": params, **state.model_state}, run.info.vocab, config


def main():
  workdir = flags.DEFINE_string("workdir", None, "The run's workdir.")
  step = flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  temperature = flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 = greedy.")
  length = flags.DEFINE_integer("length", 500, "Characters to generate.")
  prompt = flags.DEFINE_string("prompt", "\n", "Text to continue.")
  seed = flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.mark_flag_as_required("workdir")

  def run(argv):
    del argv
    train.quiet_library_logs()
    model, variables, vocab, config = restore(workdir.value, step.value)
    unknown = sorted(set(prompt.value) - set(vocab))
    if not prompt.value or unknown:
      raise ValueError(f"--prompt must be non-empty text in the vocabulary; {unknown} are not")
    ids = jnp.array([[vocab.index(c) for c in prompt.value]], jnp.int32)
    window = 0 if isinstance(model, RNNLM) or hasattr(model, "max_len") else config.data.seq_len
    tokens = sample(model, variables, ids, jax.random.key(seed.value), length=length.value,
                    temperature=temperature.value, window=window)
    print(prompt.value + "".join(vocab[int(i)] for i in tokens[0]))

  cli.run(run)


if __name__ == "__main__":
  main()
