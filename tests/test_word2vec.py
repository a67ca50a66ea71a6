"""word2vec (Mikolov et al. 2013) in JAX: Huffman tree, losses, trainer, gensim peer."""

import heapq

import numpy as np
import pytest

from deeplearn.language import huffman


def _optimal_cost(counts):
  """Expected code length x total count of an optimal prefix code (Huffman's sum of merges)."""
  heap = list(map(int, counts))
  heapq.heapify(heap)
  cost = 0
  while len(heap) > 1:
    a, b = heapq.heappop(heap), heapq.heappop(heap)
    cost += a + b
    heapq.heappush(heap, a + b)
  return cost


def test_huffman_codes_are_prefix_free_complete_and_optimal():
  rng = np.random.default_rng(0)
  counts = np.sort(rng.zipf(1.3, size=200))[::-1] + 1
  tree = huffman.huffman_tree(counts)
  v = len(counts)
  assert tree.num_inner == v - 1 and tree.codes.shape[0] == v
  words = ["".join(map(str, tree.codes[w, :tree.lengths[w]])) for w in range(v)]
  assert len(set(words)) == v
  for a in words:  # no code is a prefix of another
    assert sum(b.startswith(a) for b in words) == 1
  assert np.isclose(np.sum(2.0 ** -tree.lengths), 1.0)  # Kraft equality: a full tree
  assert int(np.dot(counts, tree.lengths)) == _optimal_cost(counts)
  # Frequent words never get longer codes than rarer ones.
  more = counts[:, None] > counts[None, :]
  assert not np.any(more & (tree.lengths[:, None] > tree.lengths[None, :]))
  # Paths start at the root (the last merge), stay in range, pad with zeros.
  assert np.all(tree.points[:, 0] == v - 2)
  assert tree.points.max() < v - 1 and tree.points.min() >= 0
  pad = np.arange(tree.max_depth)[None, :] >= tree.lengths[:, None]
  assert not tree.codes[pad].any() and not tree.points[pad].any()


def test_huffman_small_case():
  tree = huffman.huffman_tree(np.array([5, 2, 1, 1]))
  assert tree.lengths.tolist() == [1, 2, 3, 3]
  assert np.dot([5, 2, 1, 1], tree.lengths) == _optimal_cost([5, 2, 1, 1]) == 15


# word2vec: the pieces against gensim and numpy, then whole runs.

import json
import os

import jax
import jax.numpy as jnp

from deeplearn.language import embeddings_eval, word2vec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "experiments", "wiki_word2vec_skipgram_ns.py:tiny")
TINY_HS = os.path.join(ROOT, "experiments", "wiki_word2vec_cbow_hs.py:tiny")


@pytest.fixture(scope="module")
def lee():
  return word2vec.load_corpus("lee")


@pytest.fixture(scope="module")
def gensim_lee(lee):
  from gensim.models import Word2Vec
  model = Word2Vec(min_count=5, sample=1e-3, negative=5, hs=0)
  model.build_vocab(lee)
  return model


def test_vocabulary_subsampling_and_noise_match_gensim(lee, gensim_lee):
  words, counts = word2vec.build_vocab(lee, min_count=5)
  wv = gensim_lee.wv
  assert words == list(wv.index_to_key)
  # gensim keeps a word when its sample_int exceeds a random uint32.
  gensim_keep = np.array([wv.get_vecattr(w, "sample_int") for w in words]) / 2**32
  ours = word2vec.keep_probs(counts, 1e-3)
  t = 1e-3 * counts.sum()
  assert np.allclose(ours, np.minimum((np.sqrt(counts / t) + 1) * t / counts, 1))
  assert np.allclose(ours, gensim_keep, atol=1e-8)
  assert ours[0] < 0.5 and ours[-1] == 1.0  # "the" is thinned, rare words kept
  # unigram^0.75, as gensim's cumulative table, and the table realises it.
  cum = gensim_lee.cum_table / gensim_lee.cum_table[-1]
  q = word2vec.noise_probs(counts)
  assert np.allclose(q, np.diff(cum, prepend=0), atol=1e-7)
  table = word2vec.noise_table(counts, size=1 << 20)
  assert np.all(np.abs(np.bincount(table, minlength=len(q)) - q * (1 << 20)) <= 1)


def test_epoch_subsampling_keeps_words_at_the_formula_rate():
  counts = np.array([4000, 1000, 50, 10])
  corpus = np.repeat(np.arange(4), counts).astype(np.int32)
  p = word2vec.keep_probs(counts, 1e-2)
  data = word2vec.prepare_epoch(jax.random.key(0), jnp.asarray(corpus),
                                jnp.zeros(len(corpus), jnp.int32), jnp.asarray(p, jnp.float32),
                                jnp.zeros(4, jnp.int32), window=2, negatives=1, tail=0)
  kept = np.asarray(data["ids"])[2:2 + int(data["count"])]
  rate = np.bincount(kept, minlength=4) / counts
  assert np.all(np.abs(rate - p) < 4 * np.sqrt(p * (1 - p) / counts) + 1e-9), (rate, p)
  assert np.all(np.diff(np.asarray(data["pos"])[2:2 + int(data["count"])]) > 0)  # in order
  reduced = np.asarray(data["reduced"])[2:]
  assert set(reduced.tolist()) == {0, 1}  # word2vec.c's b, uniform in [0, window)


def test_hierarchical_softmax_is_normalised_over_the_vocabulary():
  counts = np.random.default_rng(1).integers(1, 1000, size=37)
  tree = huffman.huffman_tree(counts)
  h = jax.random.normal(jax.random.key(0), (1, 1, 16))
  u = jax.random.normal(jax.random.key(1), (tree.num_inner, 16))
  live = (np.arange(tree.max_depth) < tree.lengths[:, None]).astype(np.float32)

  def neg_log_p(points, codes, live):  # -log p(w | h), one word
    return word2vec.sgd_grads(h, u[points][None], 1.0 - codes[None],
                              jnp.zeros((1, tree.max_depth)), live[None, None])[2]

  total = float(jnp.exp(-jax.vmap(neg_log_p)(tree.points, tree.codes, live)).sum())
  assert abs(total - 1.0) < 1e-4


def test_one_skipgram_ns_step_equals_the_numpy_update():
  # Sentence [0, 1], window 1, one center (word 0, context 1), one negative:
  # the noise table holds only word 2, so the draw is known.
  cfg = dict(architecture="sg", loss="ns", window=1, batch_size=1, negatives=1, alpha=0.025,
             min_alpha=1e-4, corpus_words=2, epochs=1, dim=4)
  rng = np.random.default_rng(0)
  syn0, syn1 = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
  tables = {"noise": jnp.full(8, 2, jnp.int32), "noise_p": jnp.array([0.2, 0.2, 0.6])}
  data = word2vec.prepare_epoch(jax.random.key(0), jnp.array([0, 1]), jnp.array([0, 0]),
                                jnp.ones(3), tables["noise"], window=1, negatives=1, tail=2,
                                sample_on=False)
  params = {"syn0": jnp.asarray(syn0), "syn1": jnp.asarray(syn1)}
  params, stats = word2vec.make_train_steps(cfg)(params, data, tables, 0, 1, 0)
  sig = lambda z: 1 / (1 + np.exp(-z))
  x, ut, un = syn0[1], syn1[0], syn1[2]
  gt, gn = 1 - sig(x @ ut), 0 - sig(x @ un)
  want0, want1 = syn0.copy(), syn1.copy()
  want0[1] += 0.025 * (gt * ut + gn * un)
  want1[0] += 0.025 * gt * x
  want1[2] += 0.025 * gn * x
  np.testing.assert_allclose(params["syn0"], want0, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(params["syn1"], want1, rtol=1e-5, atol=1e-7)
  assert np.isclose(stats[0], -np.log(sig(x @ ut)) - np.log(sig(-x @ un)), rtol=1e-4)
  assert stats[1] == 1


def _config(spec, **train):
  from deeplearn import config as config_lib
  config = config_lib.from_file(spec)
  config.unlock()
  config.train.update(train)
  return config


def test_tiny_skipgram_learns_and_resumes_exactly(tmp_path, capsys):
  from deeplearn import train
  full = train.train_and_evaluate(_config(TINY), str(tmp_path / "full"))
  log = capsys.readouterr().out
  part = tmp_path / "part"
  train.train_and_evaluate(_config(TINY, stop_after_epochs=1), str(part))
  assert sorted(os.listdir(part / "checkpoints")) == ["1"]
  resumed = train.train_and_evaluate(_config(TINY), str(part))
  assert resumed["epochs_run"] == 3 and full["epochs_run"] == 4
  a, b = (np.loadtxt(d / "vectors.txt", skiprows=1, usecols=range(1, 101))
          for d in (tmp_path / "full", part))
  np.testing.assert_array_equal(a, b)
  assert resumed["final_loss"] == full["final_loss"]
  with open(part / "summary.json") as f:
    assert json.load(f)["wordsim353_oov_ratio"] == resumed["wordsim353_oov_ratio"]
  # It learned: loss fell, and numbers are each other's neighbours. On 60,000
  # words all vectors share one direction (gensim's too, cosine ~0.97), so
  # the cosines are of vectors centred on the vocabulary's mean.
  loss = [float(line.split("loss ")[1].split(",")[0]) for line in log.splitlines()
          if line.startswith("word2vec epoch")]
  assert len(loss) == 4 and loss[-1] < loss[0] - 0.3
  with open(tmp_path / "full" / "vectors.txt") as f:
    words = [line.split(" ", 1)[0] for line in f][1:]
  vectors = a
  normed = embeddings_eval.unit(vectors - vectors.mean(0))
  nums = [words.index(w) for w in ("two", "three", "four", "five", "six")]
  sims = normed[nums] @ normed[nums].T
  related = sims[np.triu_indices(5, 1)].mean()
  background = (normed[:500] @ normed[:500].T)[np.triu_indices(500, 1)].mean()
  assert related > background + 0.25, (related, background)


def test_tiny_cbow_hs_vectors_load_in_gensim(tmp_path):
  from deeplearn import train
  from gensim.models import KeyedVectors
  summary = train.train_and_evaluate(_config(TINY_HS), str(tmp_path))
  kv = KeyedVectors.load_word2vec_format(str(tmp_path / "vectors.txt"))
  assert kv.vector_size == 100 and len(kv) == summary["vocab_size"]
  rho = kv.evaluate_word_pairs(embeddings_eval._data("wordsim353.tsv"))[1].statistic
  assert abs(rho - summary["wordsim353_spearman"]) < 1e-3
  assert np.isfinite(summary["final_loss"]) and summary["words_per_second"] > 0
