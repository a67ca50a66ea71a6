"""Intrinsic evaluation of word vectors, computed as gensim's KeyedVectors does.

Word similarity (Finkelstein et al. 2002's WordSim-353, Hill et al. 2015's
SimLex-999): Spearman correlation of cosine similarity with human ratings,
skipping pairs with a word outside the vocabulary (their share is reported).
Analogies (Mikolov et al. 2013's questions-words.txt): 3CosAdd, the word
nearest to b - a + c among the most frequent words, a, b, c excluded.
"""

import numpy as np

from deeplearn import files

ANALOGY_VOCAB = 30_000  # gensim's evaluate_word_analogies restrict_vocab (here)


def _data(name):
  from gensim.test.utils import datapath
  return datapath(name)


def unit(vectors: np.ndarray) -> np.ndarray:
  return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def word_pairs(words, vectors, name="wordsim353.tsv") -> dict:
  """Spearman rho of cosine similarities against the file's human scores."""
  index = {w: i for i, w in enumerate(words)}
  normed = unit(vectors)
  ours, human, total = [], [], 0
  with open(_data(name), encoding="utf8") as f:
    for line in f:
      if line.startswith("#"):
        continue
      a, b, score = line.lower().split("\t")[:3]
      total += 1
      if a in index and b in index:
        ours.append(float(normed[index[a]] @ normed[index[b]]))
        human.append(float(score))
  # scipy.stats takes a second to import: only runs that score embeddings pay it.
  import scipy.stats  # pylint: disable=g-import-not-at-top
  rho = scipy.stats.spearmanr(human, ours).statistic if len(ours) > 2 else float("nan")
  return {"spearman": float(rho), "oov_ratio": 1 - len(ours) / total, "pairs": len(ours)}


def analogies(words, vectors, restrict: int = ANALOGY_VOCAB) -> dict:
  """3CosAdd accuracy over all sections; questions with a word outside the
  `restrict` most frequent are skipped (gensim's dummy4unknown=False)."""
  words, normed = words[:restrict], unit(vectors[:restrict])
  index = {w: i for i, w in enumerate(words)}
  questions = []
  with open(_data("questions-words.txt"), encoding="utf8") as f:
    for line in f:
      if line.startswith(":"):
        continue
      q = line.lower().split()
      if all(w in index for w in q):
        questions.append([index[w] for w in q])
  if not questions:
    return {"analogy_accuracy": float("nan"), "analogy_questions": 0}
  q = np.array(questions)
  correct = 0
  for chunk in np.array_split(q, max(1, len(q) // 512)):
    target = normed[chunk[:, 1]] - normed[chunk[:, 0]] + normed[chunk[:, 2]]
    sims = unit(target) @ normed.T  # [n, V]
    np.put_along_axis(sims, chunk[:, :3], -np.inf, axis=1)
    correct += int(np.sum(sims.argmax(1) == chunk[:, 3]))
  return {"analogy_accuracy": correct / len(q), "analogy_questions": len(q)}


def neighbours(words, vectors, queries, topn: int = 5) -> dict:
  index = {w: i for i, w in enumerate(words)}
  normed = unit(vectors)
  out = {}
  for query in queries:
    pos, neg = query if isinstance(query, tuple) else ([query], [])
    if not all(w in index for w in pos + neg):
      continue
    target = sum(normed[index[w]] for w in pos) - sum((normed[index[w]] for w in neg), 0)
    sims = normed @ (target / np.linalg.norm(target))
    sims[[index[w] for w in pos + neg]] = -np.inf
    name = " + ".join(pos) + "".join(f" - {w}" for w in neg)
    out[name] = [words[i] for i in np.argsort(-sims)[:topn]]
  return out


QUERIES = ["king", "france", "computer", "war", "music", "two",
           (["king", "woman"], ["man"])]


def evaluate(words, vectors) -> dict:
  ws = word_pairs(words, vectors)
  sl = word_pairs(words, vectors, "simlex999.txt")
  return {"wordsim353_spearman": ws["spearman"], "wordsim353_oov_ratio": ws["oov_ratio"],
          "simlex999_spearman": sl["spearman"], "simlex999_oov_ratio": sl["oov_ratio"],
          **analogies(words, vectors), "neighbours": neighbours(words, vectors, QUERIES)}


def report(summary: dict) -> str:
  lines = [f"WordSim-353 Spearman {summary['wordsim353_spearman']:.3f}"
           f" (OOV {summary['wordsim353_oov_ratio']:.1%}), SimLex-999"
           f" {summary['simlex999_spearman']:.3f}, analogies"
           f" {summary['analogy_accuracy']:.3f} of {summary['analogy_questions']},"
           f" {summary['words_per_second']:,.0f} words/s"]
  lines += [f"  {q}: {', '.join(ns)}" for q, ns in summary["neighbours"].items()]
  return "\n".join(lines)


def save_word2vec_format(path: str, words, vectors: np.ndarray) -> None:
  """word2vec.c's text format, which gensim's KeyedVectors.load_word2vec_format
  reads; written atomically (a rerun replaces the file whole)."""
  lines = [f"{len(words)} {vectors.shape[1]}\n"]
  lines += [w + " " + " ".join(f"{x:.6f}" for x in v) + "\n"
            for w, v in zip(words, vectors)]
  files.write_atomic(path, "".join(lines).encode("utf8"))
