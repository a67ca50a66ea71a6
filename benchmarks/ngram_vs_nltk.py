"""Count-based n-gram models: deeplearn.language.ngram vs nltk.lm, same corpus and settings.

Word-level tiny shakespeare (deeplearn.language.corpus), nltk's conventions on both
sides (`convention="nltk"`: padded_everygram_pipeline, Vocabulary(unk_cutoff=2)). Timed:
counting (nltk: the pipeline and `fit`; ours: `count_ngrams`) and scoring the held-out
text (nltk: padding into n-grams and `perplexity`; ours: `NgramLM(...)` and
`perplexity`), best of --repeats. nltk's Kneser-Ney scans every higher-order context
for each score, so it runs on the first 3,000 train and 300 validation lines.

  python benchmarks/ngram_vs_nltk.py [--order 3] [--repeats 3]
"""

import argparse
import time

import nltk
from nltk.lm import KneserNeyInterpolated, Laplace, Lidstone, MLE, StupidBackoff, Vocabulary
from nltk.lm.preprocessing import pad_both_ends, padded_everygram_pipeline
from nltk.util import ngrams

from deeplearn.language import corpus, ngram

CUTOFF = 2
ROWS = (  # name, nltk class and kwargs, our smoothing and kwargs, train / held-out lines
    ("MLE", MLE, {}, "mle", {}, None, None),
    ("Laplace", Laplace, {}, "lidstone", {"gamma": 1.0}, None, None),
    ("Lidstone(0.1)", Lidstone, {"gamma": 0.1}, "lidstone", {"gamma": 0.1}, None, None),
    ("StupidBackoff(0.4)", StupidBackoff, {"alpha": 0.4}, "stupid_backoff", {"alpha": 0.4},
     None, None),
    ("KneserNeyInterpolated(0.1)", KneserNeyInterpolated, {"discount": 0.1}, "kneser_ney",
     {"discount": 0.1}, 3000, 300),
)


def best_of(repeats, fn):
  """(result, min seconds) of `repeats` calls."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return result, min(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--order", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  n = args.order
  all_train = corpus.tiny_shakespeare_sentences("train")
  all_held_out = corpus.tiny_shakespeare_sentences("validation")
  print(f"nltk {nltk.__version__}, order {n}, unk_cutoff {CUTOFF}, best of {args.repeats}")
  print("| model | train lines (tokens) | held-out n-grams | nltk count s | nltk score s |"
        " ours count s | ours score s | speed-up | perplexity nltk / ours |")
  print("|---|---|---|---|---|---|---|---|---|")
  for name, cls, kwargs, smoothing, our_kwargs, n_train, n_held_out in ROWS:
    train, held_out = all_train[:n_train], all_held_out[:n_held_out]

    def nltk_count():
      model = cls(order=n, vocabulary=Vocabulary(unk_cutoff=CUTOFF), **kwargs)
      model.fit(*padded_everygram_pipeline(n, train))
      return model

    def nltk_score():
      return theirs.perplexity(g for s in held_out for g in ngrams(pad_both_ends(s, n=n), n))

    theirs, nltk_count_s = best_of(args.repeats, nltk_count)
    nltk_ppl, nltk_score_s = best_of(args.repeats, nltk_score)
    counts, count_s = best_of(args.repeats, lambda: ngram.count_ngrams(
        train, n, unk_cutoff=CUTOFF, convention="nltk"))
    ppl, score_s = best_of(args.repeats, lambda: ngram.NgramLM(
        counts, smoothing, **our_kwargs).perplexity(held_out))
    grams = sum(len(s) + n - 1 for s in held_out)
    speedup = (nltk_count_s + nltk_score_s) / (count_s + score_s)
    print(f"| {name} | {len(train):,} ({sum(map(len, train)):,}) | {grams:,} |"
          f" {nltk_count_s:.3f} | {nltk_score_s:.3f} | {count_s:.3f} | {score_s:.3f} |"
          f" {speedup:,.0f}x | {nltk_ppl:.6g} / {ppl:.6g} |")


if __name__ == "__main__":
  main()
