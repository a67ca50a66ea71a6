"""The step forms a supervised run can train with: one table, chosen by
config.train.step_form, each form with its checks beside it.

  jit        XLA partitions the step and inserts the collectives
             (deeplearn.step.make_train_step): what runs by default
  shard_map  the same synchronous data parallelism with the towers and their
             all-reduce written out (data_parallel.py)
  local_sgd  towers that meet every H steps (data_parallel.py, local_sgd.py)
  pipeline   layers cut into stages, micro-batches flowing through
             (pipeline.py)

The classic pmap form (data_parallel.make_pmap_train_step) keeps its state
replicated per device, a layout the loop's checkpoints do not use: it is for
study beside the loop, not in it.
"""

from collections.abc import Callable
import dataclasses

from deeplearn import step as step_lib
from deeplearn.config import did_you_mean
from deeplearn.parallel import (async_sgd, data_parallel, local_sgd, pipeline,
                                sharding)


@dataclasses.dataclass(frozen=True)
class Form:
  make_train_step: Callable  # step_lib.Run -> jitted (state, batch) -> (state, metrics, health)
  check: Callable | None = None  # (config, mesh, rules) -> None, raises


FORMS = {
    "jit": Form(step_lib.make_train_step),
    "shard_map": Form(data_parallel.make_shard_map_train_step),
    "local_sgd": Form(data_parallel.make_local_sgd_train_step),
    "pipeline": Form(pipeline.make_pipeline_train_step, pipeline.check),
}


def check(config, mesh, rules) -> None:
  """The step form's checks and the optimizer-side parallelism's
  (asynchronous and local SGD), before anything is built."""
  name = config.train.step_form
  if name not in FORMS:
    raise ValueError(
        f"config.train.step_form={name!r}; {did_you_mean(name, FORMS)}use one"
        f" of {list(FORMS)} (the pmap form is deeplearn.parallel.data_parallel"
        ".make_pmap_train_step, for study outside the loop).")
  async_sgd.check(config)
  local_sgd.check(config, sharding.num_batch_shards(rules, mesh))
  if FORMS[name].check:
    FORMS[name].check(config, mesh, rules)


def make_train_step(run: step_lib.Run):
  return FORMS[run.config.train.step_form].make_train_step(run)
