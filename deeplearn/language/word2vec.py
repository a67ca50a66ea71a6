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

Speed: an epoch subsamples and compacts the corpus on the device; then the
same jitted call (`epoch_fn`: one step of the loop's word2vec scheme,
deeplearn/schemes/word2vec.py) runs all the epoch's steps in one while
loop, each taking B consecutive center words, their windows, negatives or Huffman paths, and adding the summed per-pair SGD
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

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from deeplearn.language import huffman

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

  def train_steps(params, data, tables, first, num, epoch):
    # A while loop of dynamic length (fori_loop with traced bounds): one
    # compile serves every call, and no step is spent past the epoch's end.
    body = functools.partial(step, data=data, tables=tables, epoch=epoch)
    return lax.fori_loop(first, first + num, body, (params, jnp.zeros(2)))

  return train_steps


def make_train_steps(cfg: dict):
  """A jitted (params, epoch_data, tables, first_step, num_steps, epoch) ->
  (params, [loss, pairs]) running steps first_step.. of an epoch;
  one per distinct cfg, so a process compiles each setting once."""
  return jax.jit(_make_train_steps(tuple(sorted(cfg.items()))))


def epoch_fn(cfg: dict):
  """(params, inputs) -> (params, [loss, pairs], kept words): one whole
  epoch, pure, for the loop's jitted step. `inputs`: the corpus (`encode`),
  `keep_p`, the noise and Huffman `tables`, the epoch's PRNG `key` and the
  `epoch` index. The epoch's subsampled stream is drawn on the device, then
  every step of it runs in one while loop."""
  steps = _make_train_steps(tuple(sorted(cfg.items())))
  b = cfg["batch_size"]

  def one_epoch(params, inputs):
    tables = inputs["tables"]
    data = prepare_epoch(
        inputs["key"], inputs["corpus"], inputs["sentence"], inputs["keep_p"],
        tables["noise"], window=cfg["window"],
        negatives=0 if cfg["loss"] == "hs" else cfg["negatives"],
        tail=b + cfg["window"], sample_on=bool(cfg["sample"]))
    num = (data["count"] + b - 1) // b
    params, stats = steps(params, data, tables, 0, num, inputs["epoch"])
    return params, stats, data["count"]

  return one_epoch


def encode(sentences, min_count: int):
  """(words, counts, corpus ids, sentence ids) of token lists: the vocabulary
  (`build_vocab`) and every kept token's id and sentence, int32."""
  words, counts = build_vocab(sentences, min_count)
  index = {w: i for i, w in enumerate(words)}
  ids, sent = [], []
  for j, s in enumerate(sentences):
    kept = [index[t] for t in s if t in index]
    ids += kept
    sent += [j] * len(kept)
  return words, counts, np.array(ids, np.int32), np.array(sent, np.int32)


def output_tables(counts: np.ndarray, loss: str) -> dict:
  """The noise table and probabilities, and for hierarchical softmax each
  word's Huffman path (points, codes, lengths)."""
  tables = {"noise": noise_table(counts),
            "noise_p": noise_probs(counts).astype(np.float32)}
  if loss == "hs":
    tree = huffman.huffman_tree(counts)
    tables.update(points=tree.points, codes=tree.codes.astype(np.float32),
                  lengths=tree.lengths)
  return tables
