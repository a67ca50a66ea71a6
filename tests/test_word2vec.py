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
