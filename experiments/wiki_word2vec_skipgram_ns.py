"""word2vec skip-gram with negative sampling on a Wikipedia sample.

word2vec skip-gram with negative sampling (Mikolov et al. 2013) on gensim's
Wikipedia sample (106 articles, 452,944 tokens), gensim's settings: dim 100,
window 5, 5 negatives, min_count 5, sample 1e-3, alpha 0.025 -> 1e-4, 5 epochs.

Measured 2026-11-22 beside gensim 4.4 (same corpus and settings, 2 workers),
5 seeds with other jobs on the cores: WordSim-353 Spearman 0.234 +- 0.007
(gensim 0.236 +- 0.010; 31.4% of pairs OOV), analogies 2.0% (gensim 1.8%). On
the quiet machine (seeds 1, 2): 0.239 +- 0.008 (gensim 0.241 +- 0.005) at
681,000 raw words/s against gensim's 817,000. Seed 0: two -> three, four, five,
six; france -> spain, russia, germany, italy; computer -> software, algorithms.
Details: benchmarks/RESULTS.md, "word2vec".

  python -m deeplearn.train --config experiments/wiki_word2vec_skipgram_ns.py --workdir runs/w2v_sg
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VARIANTS = {"tiny": "4 epochs on gensim's small lee corpus"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.scheme = "word2vec"
  config.model = ml_collections.ConfigDict({
      "name": "word2vec", "architecture": "sg", "loss": "ns", "dim": 100,
      "window": 5, "negatives": 5, "sample": 1e-3, "min_count": 5,
      "min_alpha": 1e-4})

  config.data.dataset = "wiki_sample"
  config.data.batch_size = 64  # center words per sparse SGD step

  config.optimizer.name = "sgd"
  # word2vec's alpha; the scheme decays it linearly to model.min_alpha over
  # all training words (gensim), config.schedule is not used.
  config.optimizer.learning_rate = 0.025

  config.train.num_epochs = 5  # one step of the loop each
  config.train.log_every = config.train.checkpoint_every = 1
  config.train.stop_after_epochs = 0  # > 0: stop early (a test's interruption)

  if "tiny" in chosen:
    config.data.dataset = "lee"
    config.train.num_epochs = 4
  return config
