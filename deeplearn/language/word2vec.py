"""word2vec in JAX: skip-gram and CBOW with negative sampling, hierarchical
softmax or NCE, trained by sparse SGD on a corpus that lives on the device.

Lecture: distributed word representations. Papers: Mikolov et al. 2013
("Efficient Estimation of Word Representations", "Distributed Representations
of Words and Phrases"); Morin & Bengio 2005 (hierarchical softmax); Mnih & Teh
2012 (noise-contrastive estimation). Details follow word2vec.c and gensim 4.4:
min_count vocabulary, frequent-word subsampling, a reduced window drawn per
center word, unigram^0.75 noise, CBOW's mean context (cbow_mean=1) whose error
goes whole to every context word, a learning rate decaying linearly from alpha
to min_alpha over all training words.

Speed: an epoch subsamples and compacts the corpus on the device; then one
jitted call runs many steps in a loop, each taking B consecutive center words,
their windows, negatives or Huffman paths, and adding the summed per-pair SGD
updates into the two tables with scatter-adds (Hogwild-like: the pairs of a
step all see the tables as they were at its start). The K negatives are drawn
per center word and shared by its context pairs, so a step's outputs are a
[B, K+1, D] block and its logits one batched matmul. B = 64 center words:
up to 64 the vectors matched gensim's WordSim-353; skip-gram lost 0.01 at
256 and 0.05 at 1024 (the summed updates of frequent rows grow with B), and
a cbow/hs run at 1024 failed. Measurements: benchmarks/RESULTS.md.

  python -m deeplearn.train --config experiments/wiki_word2vec_skipgram_ns.py --workdir runs/w2v
"""

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import orbax.checkpoint as ocp

from deeplearn.language import embeddings_eval, huffman

WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MAX_SENTENCE = 10_000  # gensim trains at most this many words of a sentence
NOISE_TABLE = 1 << 23  # word2vec.c's unigram table (1e8 there)


def load_corpus(name: str, cache_dir: str | None = None) -> list[list[str]]:
  """Token lists of gensim's test corpora: "lee" (lee_background.cor, a
  sentence per line, simple_preprocess) or "wiki_sample" (106 Wikipedia
  articles through WikiCorpus, cached as JSON); articles are cut into pieces
  of at most 10,000 tokens, gensim's sentence limit, for both trainers."""
  from gensim.test.utils import datapath
  from gensim import utils
  if name == "lee":
    with open(datapath("lee_background.cor"), encoding="utf8") as f:
      return [t for t in map(utils.simple_preprocess, f) if t]
  if name != "wiki_sample":
    raise ValueError(f"Unknown word2vec dataset {name!r}: 'lee' or 'wiki_sample'.")
  cache_dir = cache_dir or os.path.expanduser("~/.cache/deeplearn")
  path = os.path.join(cache_dir, "wiki_sample_tokens.json")
  if not os.path.exists(path):
    from gensim.corpora import WikiCorpus
    texts = list(WikiCorpus(datapath(WIKI), dictionary={}, processes=1).get_texts())
    os.makedirs(cache_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(texts, f)
    os.replace(path + ".tmp", path)
  with open(path) as f:
    texts = json.load(f)
  return [t[i:i + MAX_SENTENCE] for t in texts for i in range(0, len(t), MAX_SENTENCE)]


def build_vocab(sentences, min_count: int):
  """(words, counts) of words seen >= min_count times, most frequent first
  (ties: the word first seen last first, as gensim's lexsort)."""
  counts = {}
  for s in sentences:
    for w in s:
      counts[w] = counts.get(w, 0) + 1
  order = {w: i for i, w in enumerate(counts)}
  words = sorted((w for w, c in counts.items() if c >= min_count),
                 key=lambda w: (-counts[w], -order[w]))
  return words, np.array([counts[w] for w in words], np.int64)


def keep_probs(counts: np.ndarray, sample: float) -> np.ndarray:
  """Subsampling (Mikolov et al. 2013b as in word2vec.c / gensim): a word of
  count f is kept with p = (sqrt(f / t) + 1) t / f, t = sample x total, <= 1."""
  if not sample:
    return np.ones(len(counts))
  t = sample * counts.sum()
  return np.minimum((np.sqrt(counts / t) + 1) * t / counts, 1.0)


def noise_probs(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
  p = counts.astype(np.float64) ** power
  return p / p.sum()


def noise_table(counts: np.ndarray, size: int = NOISE_TABLE) -> np.ndarray:
  """word2vec.c's unigram table: word w fills ~size q(w) slots, so a uniform
  slot is a draw from q (one gather per negative instead of a search)."""
  cum = np.cumsum(noise_probs(counts))
  return np.minimum(np.searchsorted(cum, (np.arange(size) + 0.5) / size),
                    len(counts) - 1).astype(np.int32)


def init_params(key, vocab_size: int, dim: int, loss: str) -> dict:
  """gensim 4: inputs uniform in +-1/dim (word2vec.c: +-0.5/dim), outputs zero
  (V-1 inner nodes for hs)."""
  rows = vocab_size - 1 if loss == "hs" else vocab_size
  return {"syn0": jax.random.uniform(key, (vocab_size, dim), jnp.float32, -1 / dim, 1 / dim),
          "syn1": jnp.zeros((rows, dim), jnp.float32)}


def sgd_grads(x, u, labels, offsets, mask):
  """Per-pair logistic losses of inputs x [B, C, D] against outputs u
  [B, K, D] with logits x.u + offsets; mask [B, C, K]. Returns the SGD
  directions (gradients of the log-likelihood) for x and u, and the loss.

  NS: labels 1 for the target, 0 for noise (Mikolov et al. 2013b); HS:
  label 1 - code at each inner node on the path; NCE: offsets -log(k q(w))
  turn the logit into the posterior that w came from the data (Mnih & Teh)."""
  s = jnp.einsum("bcd,bkd->bck", x, u) + offsets[:, None, :]
  p = jax.nn.sigmoid(s)
  g = (labels[:, None, :] - p) * mask  # [B, C, K]
  # One exp per logit (XLA:CPU's transcendentals are slow); eps keeps log finite.
  loss = -jnp.sum(mask * jnp.log(jnp.abs(1 - labels[:, None, :] - p) + 1e-7))
  # The batched matmul for du ran 10x slower on XLA:CPU than this fused
  # multiply-reduce (B x [K, C] @ [C, D] is too small to tile well).
  du = jnp.sum(g[..., None] * x[:, :, None, :], axis=1)
  return jnp.einsum("bck,bkd->bcd", g, u), du, loss


@functools.partial(jax.jit, static_argnames=("window", "negatives", "tail", "sample_on"))
def prepare_epoch(key, corpus, sentence, keep_p, noise, *, window, negatives, tail,
                  sample_on=True):
  """An epoch's stream: the kept (subsampled) token ids compacted to the front,
  their sentence ids (-1 past `count`) and corpus positions, and the epoch's
  draws per center word: the window reduction and the negatives. Drawing them
  here in a few large calls, not per step, keeps the step free of PRNG work.
  Padded with `window` words in front and `tail` behind."""
  n = corpus.shape[0]
  k_keep, k_win, k_neg = jax.random.split(key, 3)
  keep = jax.random.uniform(k_keep, (n,)) < keep_p[corpus] if sample_on else jnp.ones(n, bool)
  (pos,) = jnp.nonzero(keep, size=n, fill_value=0)
  count = keep.sum()
  live = jnp.arange(n) < count
  pad = lambda x, v=0: jnp.pad(x, [(window, tail)] + [(0, 0)] * (x.ndim - 1), constant_values=v)
  return {"ids": pad(jnp.where(live, corpus[pos], 0)),
          "sent": pad(jnp.where(live, sentence[pos], -1), -1), "pos": pad(pos),
          "reduced": pad(jax.random.randint(k_win, (n,), 0, window)),  # word2vec.c's b
          "noise": pad(noise[jax.random.randint(k_neg, (n, negatives), 0, noise.shape[0])]),
          "count": count}


def make_train_steps(cfg: dict):
  """A jitted (params, epoch_data, tables, first_step, num_steps, epoch) ->
  (params, [loss, pairs]) running steps first_step.. of an epoch;
  one per distinct cfg, so a process compiles each setting once."""
  return _make_train_steps(tuple(sorted(cfg.items())))


@functools.lru_cache(maxsize=16)
def _make_train_steps(cfg_items: tuple):
  cfg = dict(cfg_items)
  sg, loss_kind = cfg["architecture"] == "sg", cfg["loss"]
  w, b, k = cfg["window"], cfg["batch_size"], cfg["negatives"]
  alpha, min_alpha = cfg["alpha"], cfg["min_alpha"]
  total = cfg["corpus_words"] * cfg["epochs"]  # words the schedule runs over
  offs = np.array([o for o in range(-w, w + 1) if o], np.int32)

  def outputs(center, noise, tables):
    """Output rows [B, K'], labels, logit offsets and mask for each center."""
    if loss_kind == "hs":
      points, codes = tables["points"][center], tables["codes"][center]
      live = jnp.arange(points.shape[1]) < tables["lengths"][center][:, None]
      return points, 1.0 - codes, jnp.zeros(points.shape), live
    rows = jnp.concatenate([center[:, None], noise], 1)
    labels = jnp.zeros(rows.shape).at[:, 0].set(1.0)
    if loss_kind == "nce":  # logit s - log(k q(w)), noise equal to the target kept
      return rows, labels, -jnp.log(k * tables["noise_p"][rows]), jnp.ones(rows.shape, bool)
    live = jnp.concatenate([jnp.ones((b, 1), bool), noise != center[:, None]], 1)
    return rows, labels, jnp.zeros(rows.shape), live  # word2vec.c skips noise == target

  def step(i, carry, data, tables, epoch):
    params, stats = carry
    start = i * b  # the stream is padded with w words in front
    ids = lax.dynamic_slice(data["ids"], (start,), (b + 2 * w,))
    sent = lax.dynamic_slice(data["sent"], (start,), (b + 2 * w,))
    pos = lax.dynamic_slice(data["pos"], (start + w,), (b,))
    reduced = lax.dynamic_slice(data["reduced"], (start + w,), (b,))[:, None]
    noise = lax.dynamic_slice(data["noise"], (start + w, 0), (b, data["noise"].shape[1]))
    center, c_sent = ids[w:w + b], sent[w:w + b]
    ctx = jnp.stack([ids[w + o:w + o + b] for o in offs], 1)  # [B, 2w]
    ctx_sent = jnp.stack([sent[w + o:w + o + b] for o in offs], 1)
    live = (np.abs(offs) <= w - reduced) & (ctx_sent == c_sent[:, None]) & (c_sent[:, None] >= 0)
    # Linear decay over all training words, per center word (gensim: per job).
    lr = jnp.maximum(alpha - (alpha - min_alpha) * (epoch * cfg["corpus_words"] + pos) / total,
                     min_alpha)[:, None, None]
    rows, labels, offsets, out_live = outputs(center, noise, tables)
    syn0, syn1 = params["syn0"], params["syn1"]
    u = syn1[rows]  # [B, K', D]
    if sg:  # each context word predicts the center word
      x = syn0[ctx]  # [B, 2w, D]
      mask = live[:, :, None] & out_live[:, None, :]
    else:  # the mean of the context predicts it
      n = live.sum(1, keepdims=True)
      x = (jnp.einsum("bc,bcd->bd", live.astype(jnp.float32), syn0[ctx])
           / jnp.maximum(n, 1))[:, None, :]
      mask = (n > 0)[:, :, None] & out_live[:, None, :]
    dx, du, loss = sgd_grads(x, u, labels, offsets, mask.astype(jnp.float32))
    if not sg:  # word2vec.c / gensim cbow_mean: the whole error to each context word
      dx = jnp.broadcast_to(dx, (b, len(offs), dx.shape[-1])) * live[:, :, None]
    syn0 = syn0.at[ctx.reshape(-1)].add((lr * dx).reshape(-1, dx.shape[-1]))
    syn1 = syn1.at[rows.reshape(-1)].add((lr * du).reshape(-1, du.shape[-1]))
    pairs = live.sum() if sg else (live.sum(1) > 0).sum()
    return {"syn0": syn0, "syn1": syn1}, stats + jnp.stack([loss, pairs])

  @functools.partial(jax.jit, donate_argnums=(0,))
  def train_steps(params, data, tables, first, num, epoch):
    # A while loop of dynamic length (fori_loop with traced bounds): one
    # compile serves every call, and no step is spent past the epoch's end.
    body = functools.partial(step, data=data, tables=tables, epoch=epoch)
    return lax.fori_loop(first, first + num, body, (params, jnp.zeros(2)))

  return train_steps


def train(sentences, cfg: dict, *, seed: int = 0, workdir: str | None = None,
          stop_after_epochs: int = 0, log=print):
  """Trains on token lists; returns (words, counts, params, info). With a
  workdir, checkpoints each epoch (tables, PRNG key, epoch) and resumes."""
  words, counts = build_vocab(sentences, cfg["min_count"])
  index = {w: i for i, w in enumerate(words)}
  ids, sent = [], []
  for j, s in enumerate(sentences):
    kept = [index[t] for t in s if t in index]
    ids += kept
    sent += [j] * len(kept)
  corpus, sentence = jnp.array(ids, jnp.int32), jnp.array(sent, jnp.int32)
  cfg = dict(cfg, corpus_words=len(ids))  # the lr schedule's words (gensim: effective)
  tables = {"noise": jnp.asarray(noise_table(counts)),
            "noise_p": jnp.asarray(noise_probs(counts), jnp.float32)}
  if cfg["loss"] == "hs":
    tree = huffman.huffman_tree(counts)
    tables.update(points=jnp.asarray(tree.points), codes=jnp.asarray(tree.codes, jnp.float32),
                  lengths=jnp.asarray(tree.lengths))
  keep_p = jnp.asarray(keep_probs(counts, cfg["sample"]), jnp.float32)
  train_steps = make_train_steps(cfg)
  key = jax.random.key(seed)
  key, init_key = jax.random.split(key)
  params, start_epoch = init_params(init_key, len(words), cfg["dim"], cfg["loss"]), 0
  manager = None
  if workdir:
    manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                    options=ocp.CheckpointManagerOptions(max_to_keep=2))
    if manager.latest_step() is not None:
      state = {"params": params, "key": jax.random.key_data(key),
               "epoch": np.asarray(0, np.int32)}
      state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(state))
      params, key = state["params"], jax.random.wrap_key_data(state["key"])
      start_epoch = int(state["epoch"])
      log(f"word2vec: resumed after epoch {start_epoch} from {manager.directory}")
  b, per_call = cfg["batch_size"], cfg["steps_per_call"]
  raw_words = sum(map(len, sentences))
  train_time, loss = 0.0, float("nan")
  # Compile both functions outside the timing (a call of 0 steps is a no-op).
  t0 = time.perf_counter()
  epoch_data = functools.partial(
      prepare_epoch, corpus=corpus, sentence=sentence, keep_p=keep_p, noise=tables["noise"],
      window=cfg["window"], negatives=0 if cfg["loss"] == "hs" else cfg["negatives"],
      tail=per_call * b + cfg["window"], sample_on=bool(cfg["sample"]))
  params, _ = train_steps(params, epoch_data(key), tables, 0, 0, 0)
  jax.block_until_ready(params)
  compile_time = time.perf_counter() - t0
  for epoch in range(start_epoch, cfg["epochs"]):
    if stop_after_epochs and epoch >= stop_after_epochs:
      break
    t0 = time.perf_counter()
    key, k_epoch = jax.random.split(key)
    data = epoch_data(k_epoch)
    count = int(data["count"])
    num_steps = -(-count // b)
    stats = np.zeros(2)
    for first in range(0, num_steps, per_call):
      params, s = train_steps(params, data, tables, first, min(per_call, num_steps - first),
                              epoch)
      stats += np.asarray(s)
    jax.block_until_ready(params)
    dt = time.perf_counter() - t0
    train_time += dt
    loss = stats[0] / max(stats[1], 1)
    done = (epoch + 1) / cfg["epochs"]
    log(f"word2vec epoch {epoch + 1}/{cfg['epochs']}: {count} of {len(ids)} words kept,"
        f" loss {loss:.4f}, lr {cfg['alpha'] - (cfg['alpha'] - cfg['min_alpha']) * done:.5f},"
        f" {raw_words / dt:,.0f} words/s")
    if manager:
      manager.save(epoch + 1, args=ocp.args.StandardSave(
          {"params": params, "key": jax.random.key_data(key),
           "epoch": np.asarray(epoch + 1, np.int32)}))
      manager.wait_until_finished()
  epochs_run = cfg["epochs"] - start_epoch if not stop_after_epochs else min(
      stop_after_epochs, cfg["epochs"]) - start_epoch
  info = {"train_seconds": train_time, "compile_seconds": compile_time, "final_loss": loss,
          "raw_words": raw_words, "vocab_size": len(words), "epochs_run": epochs_run,
          "words_per_second": raw_words * max(epochs_run, 0) / train_time if train_time else 0.0}
  return words, counts, jax.device_get(params), info


def model_cfg(config) -> dict:
  m = config.model
  return {"architecture": m.architecture, "loss": m.loss, "dim": m.dim, "window": m.window,
          "negatives": m.negatives, "sample": m.sample, "min_count": m.min_count,
          "alpha": config.optimizer.learning_rate, "min_alpha": m.min_alpha,
          "epochs": int(config.train.num_epochs), "batch_size": config.data.batch_size,
          "steps_per_call": config.train.steps_per_call}


def train_and_evaluate(config, workdir: str) -> dict:
  """deeplearn.train's entry for config.trainer == "word2vec": trains,
  evaluates, writes summary.json and vectors.txt (word2vec text format)."""
  os.makedirs(workdir, exist_ok=True)
  sentences = load_corpus(config.data.dataset, config.data.data_dir)
  words, _, params, info = train(sentences, model_cfg(config), seed=config.train.seed,
                                 workdir=workdir, stop_after_epochs=config.train.stop_after_epochs)
  vectors = np.asarray(params["syn0"])
  summary = dict(info, **embeddings_eval.evaluate(words, vectors))
  path = os.path.join(workdir, "summary.json")
  if not info["epochs_run"] and os.path.exists(path):  # a finished run: keep its timing
    with open(path) as f:
      old = json.load(f)
    summary.update({k: old[k] for k in ("train_seconds", "words_per_second", "final_loss")})
  embeddings_eval.save_word2vec_format(os.path.join(workdir, "vectors.txt"), words, vectors)
  with open(path, "w") as f:
    json.dump(summary, f, indent=1)
  print(embeddings_eval.report(summary))
  return summary
