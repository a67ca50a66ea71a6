"""Pieces shared by the tasks: running a flax model with its state."""

import jax.numpy as jnp


def apply_model(model, params, model_state, inputs, rng, train: bool):
  """Runs the model; in training, mutable collections (batch_stats) update."""
  variables = {"params": params, **model_state}
  rngs = {"dropout": rng} if rng is not None else {}
  if train and model_state:
    outputs, new_state = model.apply(variables, inputs, train=True, rngs=rngs,
                                     mutable=list(model_state))
    return outputs, dict(new_state)
  return model.apply(variables, inputs, train=train, rngs=rngs), model_state


def finalize_mean(sums) -> dict:
  count = jnp.maximum(sums["count"], 1)
  return {k: v / count for k, v in sums.items() if k != "count"}
