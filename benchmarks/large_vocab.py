"""Full vs sampled vs hierarchical softmax for a word-level LSTM language model.

Word-tokenised tiny shakespeare (deeplearn.language.corpus; ids sorted by
training frequency, so the log-uniform proposal fits; rare words -> <unk>,
lines end in <eos>). The same RNNLM, optimizer, batches and number of steps
for each output layer (deeplearn/models/softmax.py); reported: training step
time (median after compilation) and validation perplexity by the exact full
softmax (sampled, softmax) or the exact hierarchical softmax.

  python benchmarks/large_vocab.py --steps 200
"""

import argparse
import collections
import statistics
import time
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from deeplearn import models
from deeplearn.language.corpus import tiny_shakespeare_sentences
from deeplearn.tasks.language_model import LanguageModel


def word_ids(min_count):
  train = [w for s in tiny_shakespeare_sentences("train") for w in s + ["<eos>"]]
  counts = collections.Counter(train)
  vocab = ["<unk>"] + sorted((w for w, c in counts.items() if c >= min_count),
                             key=lambda w: (-counts[w], w))
  index = {w: i for i, w in enumerate(vocab)}
  encode = lambda words: np.array([index.get(w, 0) for w in words], np.int32)  # noqa: E731
  valid = [w for s in tiny_shakespeare_sentences("validation") for w in s + ["<eos>"]]
  ids = encode(train)
  freq = np.bincount(ids, minlength=len(vocab))
  return ids, encode(valid), vocab, tuple(int(c) for c in np.maximum(freq, 1))


def windows(ids, seq_len):
  n = (len(ids) - 1) // seq_len
  return ids[:n * seq_len].reshape(n, seq_len), ids[1:n * seq_len + 1].reshape(n, seq_len)


def run(output, args, train, valid, vocab, counts):
  model = models.get_model(dict(
      name="rnn_lm", vocab_size=len(vocab), embed_dim=args.embed, hidden_size=args.hidden,
      num_layers=1, output=output, num_sampled=args.num_sampled, counts=counts))
  task = LanguageModel(model, types.SimpleNamespace(input_shape=(args.seq_len,)))
  params = jax.jit(lambda r: nn.unbox(task.init_variables(r))["params"])(jax.random.key(0))
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, batch, rng):
    (loss, _), grads = jax.value_and_grad(task.loss, has_aux=True)(params, {}, batch, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  eval_sums = jax.jit(task.eval_sums)
  x, y = train
  order = np.random.default_rng(0).permutation(len(x))
  times = []
  for i in range(args.steps):
    idx = order[np.arange(i * args.batch, (i + 1) * args.batch) % len(x)]
    batch = {"inputs": jnp.asarray(x[idx]), "targets": jnp.asarray(y[idx])}
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, batch, jax.random.key(i))
    loss.block_until_ready()
    times.append(time.perf_counter() - start)
  vx, vy = valid
  total = {"loss": 0.0, "count": 0.0}
  for s in range(0, len(vx) - 31, 32):  # whole batches of 32 windows: [1024, V] logits
    b = {"inputs": jnp.asarray(vx[s:s + 32]), "targets": jnp.asarray(vy[s:s + 32]),
         "mask": jnp.ones(32)}
    sums = eval_sums(params, {}, b)
    total = {k: total[k] + float(sums[k]) for k in total}
  return statistics.median(times[5:]), float(np.exp(total["loss"] / total["count"])), float(loss)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--seq_len", type=int, default=32)
  p.add_argument("--embed", type=int, default=64)
  p.add_argument("--hidden", type=int, default=128)
  p.add_argument("--num_sampled", type=int, default=256)
  p.add_argument("--min_count", type=int, default=1)
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--outputs", default="softmax,sampled,hierarchical")
  args = p.parse_args()
  train_ids, valid_ids, vocab, counts = word_ids(args.min_count)
  print(f"vocab {len(vocab):,} words, {len(train_ids):,} train / {len(valid_ids):,} validation"
        f" tokens; {args.steps} steps of {args.batch}x{args.seq_len}")
  print("| output | step ms (median) | last train loss | validation perplexity |")
  print("|---|---|---|---|")
  for output in args.outputs.split(","):
    ms, ppl, loss = run(output, args, windows(train_ids, args.seq_len),
                        windows(valid_ids, args.seq_len), vocab, counts)
    name = f"sampled (K={args.num_sampled})" if output == "sampled" else output
    print(f"| {name} | {1000 * ms:.1f} | {loss:.3f} | {ppl:.1f} |", flush=True)


if __name__ == "__main__":
  main()
