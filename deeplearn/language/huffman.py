"""Huffman coding of a vocabulary: the tree behind hierarchical softmax.

Morin & Bengio (2005) factor p(w | h) into binary decisions along a path from
the root to w; Mikolov et al. (2013, "Distributed Representations of Words and
Phrases") use a Huffman tree so that frequent words get short paths and the
expected cost per word is minimal. The construction follows word2vec.c and
gensim (`heapq` over (count, node id)): repeatedly merge the two least frequent
nodes; the first popped becomes the 0 branch, the second the 1 branch.

Conventions (as gensim): inner node i (0 <= i < V - 1) is the i-th merge, so
the root is V - 2; `points[w, :lengths[w]]` are the inner nodes from the root
down to w and `codes[w, :lengths[w]]` the branch taken at each. p(w | h) =
prod_j sigmoid((1 - 2 codes[w, j]) * h . u[points[w, j]]), which sums to 1 over
the vocabulary because sigmoid(x) + sigmoid(-x) = 1 at every inner node.
"""

import dataclasses
import heapq

import numpy as np


@dataclasses.dataclass(frozen=True)
class HuffmanTree:
  codes: np.ndarray  # int8 [V, max_depth], 0/1 branch decisions, 0 past lengths
  points: np.ndarray  # int32 [V, max_depth], inner-node ids in [0, V-1), 0 past lengths
  lengths: np.ndarray  # int32 [V], code length of each word
  num_inner: int  # V - 1

  @property
  def max_depth(self) -> int:
    return self.codes.shape[1]


def huffman_tree(counts: np.ndarray) -> HuffmanTree:
  """Huffman tree of word `counts` [V] (V >= 2): most frequent words, shortest codes."""
  counts = np.asarray(counts)
  v = len(counts)
  if v < 2:
    raise ValueError(f"a Huffman tree needs at least 2 words, got {v}")
  # Heap of (count, node id): leaves are 0..V-1, inner node i is V + i. Ties go
  # to the lower id, so the tree is deterministic.
  heap = [(int(c), i) for i, c in enumerate(counts)]
  heapq.heapify(heap)
  children = np.zeros((v - 1, 2), np.int64)
  for i in range(v - 1):
    c0, n0 = heapq.heappop(heap)
    c1, n1 = heapq.heappop(heap)
    children[i] = n0, n1
    heapq.heappush(heap, (c0 + c1, v + i))
  # Walk down from the root, carrying the path (iterative: depth can be ~V).
  paths = [None] * v
  stack = [(2 * v - 2, (), ())]
  while stack:
    node, codes, points = stack.pop()
    if node < v:
      paths[node] = (codes, points)
      continue
    inner = node - v
    points = points + (inner,)
    stack.append((int(children[inner, 0]), codes + (0,), points))
    stack.append((int(children[inner, 1]), codes + (1,), points))
  lengths = np.array([len(c) for c, _ in paths], np.int32)
  depth = int(lengths.max())
  codes = np.zeros((v, depth), np.int8)
  points = np.zeros((v, depth), np.int32)
  for w, (c, p) in enumerate(paths):
    codes[w, :len(c)] = c
    points[w, :len(p)] = p
  return HuffmanTree(codes=codes, points=points, lengths=lengths, num_inner=v - 1)
