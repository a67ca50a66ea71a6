"""word2vec CBOW with hierarchical softmax on a Wikipedia sample.

word2vec CBOW (mean context) with hierarchical softmax over a Huffman tree
(Mikolov et al. 2013; Morin & Bengio 2005) on gensim's Wikipedia sample.

The corpus and gensim's settings (dim 100, window 5, min_count 5, sample 1e-3,
alpha 0.025 -> 1e-4, 5 epochs) are wiki_word2vec_skipgram_ns.py's; this file
swaps the architecture and the loss.

Measured 2026-11-22 beside gensim 4.4 (same corpus and settings, 2 workers):
WordSim-353 Spearman 0.331 +- 0.001 (gensim 0.301 +- 0.029), 2 seeds with other
jobs on the cores; on the quiet machine 0.350 +- 0.027 (gensim 0.313) at
1,068,000 raw words/s against gensim's 2,594,000 (0.41x). Seed 0: king ->
william, robert, washington; computer -> software, knuth, computers. Details:
benchmarks/RESULTS.md, "word2vec".

  python -m deeplearn.train --config experiments/wiki_word2vec_cbow_hs.py --workdir runs/w2v_cbow
"""

import os

from deeplearn.config import from_file
from deeplearn.experiments import variants

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "wiki_word2vec_skipgram_ns.py")

VARIANTS = {"tiny": "4 epochs on gensim's small lee corpus"}


def get_config(arg=None):
  variants(arg, VARIANTS)
  config = from_file(RECIPE + (f":{arg}" if arg else ""))
  config.model.architecture = "cbow"
  config.model.loss = "hs"
  return config
