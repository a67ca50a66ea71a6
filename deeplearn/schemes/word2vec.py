"""word2vec as a scheme of the loop: one step is one epoch of sparse SGD.

config.scheme = "word2vec" (experiments/wiki_word2vec_*.py). The model, the
epoch's subsampling and the sparse updates are deeplearn/language/word2vec.py;
the loop gives the run what every scheme gets: checkpoints of the two tables
with integrity checks, bitwise resume at any epoch (an epoch's draws come
from the seed and the epoch alone), SIGTERM, the NaN policy, metrics.jsonl,
TensorBoard and summary.json. Evaluation is WordSim-353, SimLex-999 and the
analogies (deeplearn/language/embeddings_eval.py); a finished run leaves its
vectors in word2vec.c's text format, vectors.txt.

The whole corpus lives on one device (Hogwild-like: every pair of a step
sees the tables as they were at its start); the run uses the first device.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from deeplearn import step as step_lib
from deeplearn.language import embeddings_eval, word2vec
from deeplearn.parallel import mesh as mesh_lib
from deeplearn.schemes.base import Position, Scheme


def model_cfg(config, corpus_words: int) -> dict:
  m = config.model
  return {"architecture": m.architecture, "loss": m.loss, "dim": m.dim, "window": m.window,
          "negatives": m.negatives, "sample": m.sample, "min_count": m.min_count,
          "alpha": config.optimizer.learning_rate, "min_alpha": m.min_alpha,
          "epochs": int(config.train.num_epochs), "batch_size": config.data.batch_size,
          "corpus_words": corpus_words}


class Word2Vec(Scheme):
  """State {"syn0": [V, D], "syn1": [V or V - 1, D]}; input: the epoch."""
  best_metric = ("wordsim353_spearman", "max")

  def __init__(self, config, devices=None):
    if config.train.nonfinite != "stop":
      raise ValueError("config.train.nonfinite: word2vec's sparse step has no"
                       " skip; set it to 'stop'.")
    if jax.process_count() > 1:
      raise ValueError("config.scheme='word2vec' trains on one device of one"
                       " process; start it as a single process.")
    if int(config.train.num_epochs) < 1 or config.train.num_steps:
      raise ValueError("config.train.num_epochs: word2vec counts epochs (one"
                       " step each); set num_epochs >= 1 and num_steps = 0.")
    self.config = config
    devices = list(jax.devices() if devices is None else devices)[:1]
    self.mesh = mesh_lib.make_mesh({"data": 1}, devices)
    self.num_steps = int(config.train.num_epochs)
    self.stop_after = config.train.get("stop_after_epochs", 0)
    sentences = word2vec.load_corpus(config.data.dataset, config.data.data_dir)
    self.words, counts, corpus, sentence = word2vec.encode(
        sentences, config.model.min_count)
    self.raw_words = self.examples_per_step = sum(map(len, sentences))
    self.cfg = model_cfg(config, len(corpus))
    self._replicated = step_lib.replicated(self.mesh)
    put = lambda tree: jax.device_put(tree, self._replicated)
    self._inputs = put({
        "corpus": corpus, "sentence": sentence,
        "keep_p": word2vec.keep_probs(counts, self.cfg["sample"]).astype(np.float32),
        "tables": word2vec.output_tables(counts, self.cfg["loss"])})
    key = jax.random.key(config.train.seed)
    self._init_key, self._train_key = jax.random.split(key)
    one_epoch = word2vec.epoch_fn(self.cfg)

    def train_step(params, inputs):
      new, stats, kept = one_epoch(params, inputs)
      loss = stats[0] / jnp.maximum(stats[1], 1)
      done = (inputs["epoch"] + 1) / self.cfg["epochs"]
      lr = self.cfg["alpha"] - (self.cfg["alpha"] - self.cfg["min_alpha"]) * done
      checks = step_lib.health(loss, {}, new)
      return new, {"loss": loss, "kept": kept, "learning_rate": lr}, {
          **checks, "streak": (~checks["finite"]).astype(jnp.int32)}

    self.train_step = step_lib.jit_step(train_step, self.mesh,
                                    (self._replicated, self._replicated),
                                    self._replicated)
    self._last_eval, self._last_loss = None, float("nan")

  def init_state(self):
    return jax.device_put(
        word2vec.init_params(self._init_key, len(self.words), self.cfg["dim"],
                             self.cfg["loss"]), self._replicated)

  def abstract_state(self):
    return step_lib.abstract(self.init_state, self._replicated)

  def inputs(self):
    return Position()

  def next_input(self, iterator):
    epoch = next(iterator)["index"]
    return {**self._inputs, "epoch": epoch,
            "key": jax.random.fold_in(self._train_key, epoch)}

  def nonfinite_leaf_names(self) -> list[str]:
    return ["loss", "params/syn0", "params/syn1"]

  def evaluate(self, state) -> dict[str, float]:
    self._last_eval = embeddings_eval.evaluate(self.words, np.asarray(state["syn0"]))
    return {k: v for k, v in self._last_eval.items() if k != "neighbours"}

  def describe(self, state) -> str:
    return (f"word2vec {self.cfg['architecture']}/{self.cfg['loss']} on"
            f" {self.config.data.dataset} | {self.raw_words:,} words,"
            f" vocabulary {len(self.words):,} | {state['syn0'].size:,} input"
            " weights")

  def log_line(self, step_index: int, means: dict) -> str:
    self._last_loss = means["loss"]
    return (f"word2vec epoch {step_index}/{self.num_steps}: {int(means['kept'])}"
            f" of {self.cfg['corpus_words']} words kept, loss {means['loss']:.4f},"
            f" lr {means['learning_rate']:.5f},"
            f" {self.raw_words / means['step_s']:,.0f} words/s")

  def finish(self, state, workdir: str, summary: dict) -> dict:
    """Writes vectors.txt; the summary's word2vec figures, flat."""
    vectors = np.asarray(state["syn0"])
    if self._last_eval is None:
      self.evaluate(state)
    embeddings_eval.save_word2vec_format(os.path.join(workdir, "vectors.txt"),
                                         self.words, vectors)
    out = {**self._last_eval, "final_loss": self._last_loss,
           "epochs_run": self.num_steps - summary["resumed_from"],
           "words_per_second": summary["examples_per_s"] or 0.0,
           "raw_words": self.raw_words, "vocab_size": len(self.words)}
    if jax.process_index() == 0:
      print(embeddings_eval.report(out), flush=True)
    return out
