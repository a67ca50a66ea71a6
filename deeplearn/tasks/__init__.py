"""Tasks: the pure functions a training scheme supplies to the train loop.

A task knows how to turn a batch into a loss and metrics; the loop knows
nothing model-specific. Every task offers:

  init_variables(rng, batch_size) -> flax variables (params + model state)
  loss(params, model_state, batch, rng) -> loss, (metric sums, new model state)
  eval_sums(params, model_state, batch) -> metric sums over the masked batch
  finalize(sums) -> metrics (means, perplexity, ...)
  best_metric -> (name, "max" | "min")

and optionally
  check_data(batch, key): raises, naming `key`, on data the task cannot model
    (deeplearn.schemes.supervised.build shows it the first train and eval batch)
  images(params, model_state, batch) -> {name: uint8 picture}, for a fixed
    batch of eval examples (deeplearn.schemes.base: `images`)
  prepare_batch(batch) -> batch: host-side additions to each training batch
    (distillation's precomputed teacher logits)
  initial_model_state(model_state) -> model_state: restored parts put in the
    freshly initialised state (distillation's teacher)

Knowledge distillation (tasks/distillation.py) wraps the classification task
when config.distill names a teacher; deeplearn.schemes.supervised.build does.

Metric sums always include `count`, the number of examples (or tokens) they
add up, so sums from many batches and devices combine exactly.
"""

import dataclasses

from deeplearn.config import did_you_mean
from deeplearn.tasks.cascade import Cascade
from deeplearn.tasks.classification import Classification
from deeplearn.tasks.language_model import LanguageModel
from deeplearn.tasks.pair_ranking import PairRanking
from deeplearn.tasks.reconstruction import Reconstruction
from deeplearn.tasks.seq2seq import Seq2Seq
from deeplearn.tasks.vae import VAE

TASKS = {"classification": Classification, "language_model": LanguageModel,
         "seq2seq": Seq2Seq, "pair_ranking": PairRanking,
         "reconstruction": Reconstruction, "vae": VAE, "cascade": Cascade}


def get_task(name: str, model, info, label_smoothing: float = 0.0,
             loss_config=None):
  """The task `name` for the model and dataset. `loss_config` (config.loss)
  reaches the tasks that read more of it than label_smoothing (those with a
  `loss_config` field: reconstruction, vae), which check its keys."""
  if name not in TASKS:
    raise ValueError(f"config.task={name!r} is not a task; "
                     f"{did_you_mean(name, TASKS)}use one of {sorted(TASKS)},"
                     " or '' for the dataset's own.")
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"config.loss.label_smoothing={label_smoothing} must be in"
                     " [0, 1).")
  cls = TASKS[name]
  if "loss_config" in {f.name for f in dataclasses.fields(cls)}:
    return cls(model, info, label_smoothing, loss_config=loss_config)
  return cls(model, info, label_smoothing)
