"""Perplexity vs n of count-based n-gram models on tiny shakespeare (the shakespeare_ngram
experiment: counting has no train loop, so it is this script, not an experiments/ config).

Trained on the train split (90%), measured on validation (5%), textbook convention
(deeplearn.language.ngram): add-k (Lidstone), interpolated Kneser-Ney and Katz backoff, over words (a
sentence per non-empty line, lowercased words and punctuation, words seen once -> <UNK>)
and over characters (the split as one sequence, newlines included, as the char-rnn task).
Perplexity is per predicted token (words and </s>; characters); bits/char = log2 of it.

  python benchmarks/ngram_table.py [--orders 1,2,3,4,5,6] [--split validation]
"""

import argparse
import math
import time

import numpy as np

from deeplearn.language import corpus, ngram

MODELS = (("add-1", "lidstone", {"gamma": 1.0}), ("add-0.01", "lidstone", {"gamma": 0.01}),
          ("KN d=0.75", "kneser_ney", {"discount": 0.75}),
          ("KN d=0.9", "kneser_ney", {"discount": 0.9}), ("Katz", "katz", {}))
LEVELS = (("word", 2), ("char", 1))  # (level, unk_cutoff)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--orders", default="1,2,3,4,5,6")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--sample", type=int, default=300,
                      help="Characters to sample from the best character model.")
  args = parser.parse_args()
  orders = [int(n) for n in args.orders.split(",")]
  best = {}
  for level, cutoff in LEVELS:
    train = corpus.tiny_shakespeare_sentences("train", level)
    held_out = corpus.tiny_shakespeare_sentences(args.split, level)
    print(f"\n{level}s: {sum(map(len, train)):,} train tokens, "
          f"{sum(map(len, held_out)):,} {args.split} tokens, unk_cutoff={cutoff}")
    print("| n | " + " | ".join(name for name, _, _ in MODELS) + " | count + score s |")
    print("|---|" + "---|" * (len(MODELS) + 1))
    for n in orders:
      start = time.perf_counter()
      counts = ngram.count_ngrams(train, n, unk_cutoff=cutoff)
      cells = []
      for name, smoothing, kwargs in MODELS:
        model = ngram.NgramLM(counts, smoothing, **kwargs)
        ppl = model.perplexity(held_out)  # characters: bits/char beside it
        cells.append(f"{ppl:.3f} ({math.log2(ppl):.3f} b)" if level == "char" else f"{ppl:.1f}")
        if ppl < best.get(level, (math.inf,))[0]:
          best[level] = (ppl, n, name, model)
      print(f"| {n} | " + " | ".join(cells) + f" | {time.perf_counter() - start:.2f} |")
  for level, (ppl, n, name, _) in best.items():
    print(f"best {level}: n={n} {name}, perplexity {ppl:.3f} = {math.log(ppl):.3f} nats")
  if "char" in best and args.sample:
    model = best["char"][3]
    text = model.generate(np.random.default_rng(0), max_tokens=args.sample,
                          prefix=list("ROMEO:\n"))
    print("\nsample (seed 0, after 'ROMEO:\\n'):\nROMEO:\n" + "".join(text))


if __name__ == "__main__":
  main()
