"""word2vec in JAX (deeplearn.language.word2vec) side by side with gensim 4.4.

Both train on the same token lists (gensim's Wikipedia sample, or lee) with
the same hyper-parameters: dim 100, window 5, min_count 5, sample 1e-3,
alpha 0.025 -> 1e-4, 5 negatives (ns / nce), 5 epochs; gensim with
workers=2. Words/s is measured the same way for both: raw corpus words x
epochs / training wall time, excluding compilation and vocabulary building
(ours: the experiment through deeplearn's loop, epochs 2-5, the first holding
the compilation);
gensim's own "effective words/s" (words left after min_count and
subsampling, from its epoch log lines) is shown beside it. Runs alternate
ours / gensim per seed, so both see the same load on a shared machine.

  python benchmarks/word2vec_vs_gensim.py --configs sg-ns,cbow-hs --seeds 0,1
  python benchmarks/word2vec_vs_gensim.py --configs sg-ns --batch_sizes 16,64,256,1024 --no_gensim
"""

import argparse
import contextlib
import io
import json
import logging
import os
import re
import tempfile
import time

import numpy as np

from deeplearn import config as config_lib, train
from deeplearn.language import embeddings_eval, word2vec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BATCH = {"sg": 64, "cbow": 64}  # the experiments' center words per step
# gensim's side; ours reads the same values from experiments/wiki_word2vec_skipgram_ns.py.
SETTINGS = dict(dim=100, window=5, negatives=5, sample=1e-3, min_count=5, alpha=0.025,
                min_alpha=1e-4, epochs=5)


class _EffectiveRate(logging.Handler):
  """Collects gensim's per-epoch "N effective words/s" log figures."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.rates = []

  def emit(self, record):
    m = re.search(r"([\d.]+) effective words/s", record.getMessage())
    if m:
      self.rates.append(float(m.group(1)))


def run_ours(dataset, arch, loss, seed, batch_size):
  """The experiment through deeplearn's loop (as `deeplearn.train` runs it),
  in a fresh workdir; words/s over the epochs after the first (which holds
  the compilation): the loop's examples/s."""
  config = config_lib.from_file(os.path.join(ROOT, "experiments",
                                             "wiki_word2vec_skipgram_ns.py"))
  config.model.update(architecture=arch, loss=loss)
  config.data.update(dataset=dataset, batch_size=batch_size)
  config.train.update(seed=seed, progress=False, compilation_cache_dir="")
  with tempfile.TemporaryDirectory() as workdir, contextlib.redirect_stdout(io.StringIO()):
    summary = train.train_and_evaluate(config, workdir)
  return dict(summary, effective=float("nan"))


def run_gensim(sentences, arch, loss, seed):
  from gensim.models import Word2Vec
  handler = _EffectiveRate()
  logger = logging.getLogger("gensim.models.word2vec")
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False  # keep its progress lines out of the output
  model = Word2Vec(vector_size=SETTINGS["dim"], window=SETTINGS["window"],
                   min_count=SETTINGS["min_count"], sample=SETTINGS["sample"],
                   sg=int(arch == "sg"), hs=int(loss == "hs"),
                   negative=0 if loss == "hs" else SETTINGS["negatives"],
                   alpha=SETTINGS["alpha"], min_alpha=SETTINGS["min_alpha"], workers=2,
                   seed=seed, epochs=SETTINGS["epochs"])
  model.build_vocab(sentences)
  t0 = time.perf_counter()
  model.train(sentences, total_examples=model.corpus_count, epochs=SETTINGS["epochs"])
  seconds = time.perf_counter() - t0
  logger.removeHandler(handler)
  raw = sum(map(len, sentences)) * SETTINGS["epochs"]
  result = embeddings_eval.evaluate(list(model.wv.index_to_key), model.wv.vectors)
  return dict(result, words_per_second=raw / seconds, effective=float(np.mean(handler.rates)))


def _mean(runs, key):
  values = np.array([r[key] for r in runs], float)
  if len(values) > 1:
    return f"{values.mean():,.3f} ± {values.std(ddof=1):.3f}" if values.mean() < 10 else \
        f"{values.mean():,.0f} ± {values.std(ddof=1):,.0f}"
  return f"{values[0]:,.3f}" if values[0] < 10 else f"{values[0]:,.0f}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="wiki_sample")
  parser.add_argument("--configs", default="sg-ns,cbow-hs")
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--batch_sizes", default="", help="ours only: a sweep")
  parser.add_argument("--no_gensim", action="store_true")
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  sentences = word2vec.load_corpus(args.dataset)
  seeds = [int(s) for s in args.seeds.split(",")]
  rows, raw = [], {}
  print(f"load average at start: {os.getloadavg()}", flush=True)
  for config in args.configs.split(","):
    arch, loss = config.split("-")
    sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else [BATCH[arch]]
    peers = {f"ours B={b}": [] for b in sizes}
    if not args.no_gensim and loss != "nce":
      peers["gensim"] = []
    for seed in seeds:
      for peer in peers:
        run = (run_gensim(sentences, arch, loss, seed) if peer == "gensim" else
               run_ours(args.dataset, arch, loss, seed, int(peer.split("=")[1])))
        peers[peer].append(run)
        print(f"{config} {peer} seed {seed}: {run['words_per_second']:,.0f} words/s, WordSim"
              f" {run['wordsim353_spearman']:.3f}, analogies {run['analogy_accuracy']:.4f},"
              f" king + woman - man: {run['neighbours'].get('king + woman - man')}", flush=True)
    for peer, runs in peers.items():
      raw[f"{config} {peer}"] = runs
      rows.append(f"| {config} | {peer} | {_mean(runs, 'words_per_second')} | "
                  f"{_mean(runs, 'effective') if peer == 'gensim' else '—'} | "
                  f"{_mean(runs, 'wordsim353_spearman')} | {_mean(runs, 'simlex999_spearman')} | "
                  f"{_mean(runs, 'analogy_accuracy')} |")
  print(f"load average at end: {os.getloadavg()}")
  print(f"\n{len(seeds)} seeds each (mean ± sd); WordSim-353 OOV"
        f" {raw[next(iter(raw))][0]['wordsim353_oov_ratio']:.1%} of pairs skipped.\n")
  print("| config | trainer | words/s | gensim effective words/s | WordSim-353 ρ |"
        " SimLex-999 ρ | analogy acc. |")
  print("|---|---|---|---|---|---|---|")
  print("\n".join(rows))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(raw, f, indent=1)


if __name__ == "__main__":
  main()
