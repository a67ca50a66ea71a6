"""Evaluates a run's checkpoint: python -m deeplearn.evaluate --workdir runs/cnn

Reads the run's stored config (JSON, never executed), restores the newest
checkpoint (or --step) onto the devices present, and prints the eval metrics
of --split (default: the config's eval split). Writes nothing.
"""

import json
import os

from absl import flags
import jax

from deeplearn import checkpoint, cli, config as config_lib, data, step as step_lib, train
from deeplearn.schemes import supervised


def evaluate_checkpoint(workdir: str, step: int | None = None,
                        split: str | None = None, devices=None) -> dict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} the workdir of"
                            " a deeplearn.train run?")
  with open(path) as f:
    config = config_lib.from_json(f.read())
  if split:
    config.data.eval_split = split
  run = supervised.build(config, devices)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {ckpt.directory}.")
  abstract = step_lib.abstract_state(run)
  state = ckpt.restore(step, abstract)
  ckpt.close()
  dataset = data.eval_dataset(config.data, process_index=jax.process_index(),
                              process_count=jax.process_count())
  metrics = step_lib.evaluate(run, step_lib.make_eval_step(run), state, dataset)
  return {"step": step, "split": config.data.eval_split, **metrics}


def main():
  workdir = flags.DEFINE_string("workdir", None, "The run's workdir.")
  step = flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  split = flags.DEFINE_string("split", None, "Split to evaluate (default: the"
                              " config's eval split).")
  flags.mark_flag_as_required("workdir")

  def run(argv):
    del argv
    train.quiet_library_logs()
    result = evaluate_checkpoint(workdir.value, step.value, split.value)
    print(json.dumps(result, indent=2))

  cli.run(run)


if __name__ == "__main__":
  main()
