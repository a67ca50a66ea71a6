"""The scheme interface: what a training scheme supplies to the one loop.

A scheme is how a run learns: supervised learning (one model, one optimizer,
batches from a dataset), word2vec's sparse SGD over a corpus, a GAN's two
alternating optimizers, DQN's environment and replay buffer. The loop
(deeplearn/loop.py) supplies the rest to all of them alike: compilation
cache, checkpoints with integrity checks and bitwise resume of the state and
the input position, SIGTERM handling, the NaN policy, the progress bar,
TensorBoard + metrics.jsonl and summary.json.

A scheme is built from (config, devices) and has checked its config by the
time its constructor returns, before anything compiles. It supplies:

  num_steps, best_metric, examples_per_step      what the loop counts
  init_state() / abstract_state()               a fresh state, and its
                                                shapes and shardings for a
                                                restore; one pytree holding
                                                everything that must resume
                                                (parameters, optimizer
                                                states, replay buffer,
                                                environment states, RNG)
  inputs() / next_input(iterator)               a checkpointable iterator
                                                (a grain iterator, or
                                                `Position`) and the step's
                                                input from it
  train_step(state, input)                      -> (state, metrics, health),
                                                health as deeplearn.step's
                                                `health` plus "streak"
  nonfinite_leaf_names()                        names health indexes into
  evaluate(state) -> {metric: float}
  images(state) -> {name: uint8 array}          pictures at each evaluation
                                                (sample grids,
                                                reconstructions): [H, W] or
                                                [H, W, 3]; the loop writes
                                                WORKDIR/images/<name>/<step>.png
                                                and TensorBoard images
  describe(state) -> str                        the run's first line
  log_line(step, means) -> str | None           a line per log interval
  finish(state, workdir, summary) -> dict       what a finished run leaves
                                                beside its summary, and the
                                                scheme's summary fields

Where the input of a step comes from is the scheme's business: for a scheme
whose inputs live in the state (a replay buffer, environments stepped on the
device), `inputs()` is a `Position` and the state carries the rest.
"""

import json

import numpy as np


class Scheme:
  """Defaults for the optional parts of the interface; see the module."""
  config = None
  mesh = None
  num_steps: int = 0
  best_metric: tuple[str, str] = ("loss", "min")
  examples_per_step: int = 0  # for examples/s; 0 = not reported
  stop_after: int = 0  # > 0: save and stop after this step (an interruption)

  def log_line(self, step: int, means: dict) -> str | None:
    """A line to print at each log interval (train metrics' means)."""
    del step, means
    return None

  def images(self, state) -> dict:
    """{name: uint8 [H, W] or [H, W, 3]} to picture at each evaluation."""
    del state
    return {}

  def finish(self, state, workdir: str, summary: dict) -> dict:
    """Writes what a finished run leaves beside summary.json (vectors,
    samples); returns the scheme's own summary fields."""
    del state, workdir, summary
    return {}


class Position:
  """Inputs that are a count: yields {"index": i} for i = 0, 1, ...

  The iterator a scheme uses when its step needs only to know which step
  (or epoch) it is: its state, the next index, checkpoints as JSON with the
  loop's other input states."""

  def __init__(self):
    self.index = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    out = {"index": np.asarray(self.index, np.int32)}
    self.index += 1
    return out

  # grain's checkpoint handler takes any iterator with these three.
  def get_state(self) -> bytes:
    return json.dumps({"index": self.index}).encode()

  def set_state(self, state: bytes) -> None:
    self.index = int(json.loads(state)["index"])

  def start_prefetch(self) -> None:
    pass
