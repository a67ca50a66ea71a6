"""Count-based n-gram language models: counting, smoothing, perplexity, sampling.

Lecture concept: the Markov approximation of the chain rule. A sentence's
probability is a product of next-token probabilities, each conditioned on only
the previous n-1 tokens; for a bigram model

  P(THE DOG RAN AWAY) = P(the | <s>) P(dog | the) P(ran | dog) P(away | ran) P(</s> | away)

and the conditionals are estimated by counting. Counting (every order 1..n) is
vectorised: tokens are int ids, a k-gram is (row of its first k-1 tokens in the
(k-1)-gram table) * V + last id, and `np.unique` over all positions at once
builds each order's table; there is no Python loop over tokens.

Smoothing (`NgramLM(counts, smoothing, ...)`), c(.) a count, h a context:
  "mle"            c(h w) / c(h); an unseen context has no estimate: probability
                   0 and infinite perplexity, as in nltk.
  "lidstone"       (c(h w) + gamma) / (c(h) + gamma V): add-k; gamma=1 is Laplace.
                   V: the tokens predicted (`counts.support`, see the conventions).
  "kneser_ney"     interpolated Kneser-Ney with one discount d (Kneser & Ney 1995;
                   Chen & Goodman 1998, eq. 18; Jurafsky & Martin ch. 3, eqs. 3.35-3.36):
                   max(c_KN(h w) - d, 0) / sum_v c_KN(h v) + lambda(h) P_KN(w | h'),
                   c_KN the count at the highest order and the continuation count
                   N1+(. h w) (distinct tokens seen before h w) below it, lambda(h) =
                   d |{w: c_KN(h w) > 0}| / sum_v c_KN(h v), and at the bottom the
                   uniform 1/V, so no token of the vocabulary has probability 0.
  "katz"           Katz backoff (Katz 1987; Jurafsky & Martin 2nd ed. 4.7): a seen
                   k-gram keeps its Good-Turing-discounted estimate d_r c(h w) / c(h),
                   r = c(h w), d_r = (r*/r - A) / (1 - A) for r <= 5 with r* = (r+1)
                   n_{r+1} / n_r, A = 6 n_6 / n_1 (n_r: k-grams seen r times at that
                   order), d_r = 1 above 5 or where that ratio leaves (0, 1]; an
                   unseen one backs off, alpha(h) P_katz(w | h'), alpha(h) = (1 - sum of
                   h's discounted estimates) / (1 - sum of P_katz(w | h') over the same
                   w); an unseen context backs off whole; the unigram level is MLE.
                   A context whose k-grams are all seen more than 5 times would keep
                   no mass for unseen words (probability 0, infinite perplexity):
                   there c(h) + 1 divides instead, SRILM's "0 backoff probability
                   mass left -- incrementing denominator".
  "stupid_backoff" c(h w) / c(h) if c(h w) > 0, else alpha S(w | h') (Brants et al.
                   2007). NOT a distribution: scores of a context do not sum to 1, so
                   its "perplexity" is only a score.

Conventions (`count_ngrams(..., convention=)`):
  "textbook"  Jurafsky & Martin: n-1 <s> before a sentence and one </s> after it;
              only the k-grams ending at a predicted token (a word or </s>) are
              counted, so <s> is context only and V excludes it.
  "nltk"      exactly nltk.lm (3.10) with `padded_everygram_pipeline`, quirks and
              all: n-1 <s> and n-1 </s> per sentence, every k-gram of the padded
              sentence counted (<s> is a unigram with mass; the n-2 extra </s> after
              </s> are predicted, almost surely, in perplexity), V counts <s> and
              </s>. Its KneserNeyInterpolated departs from the formula above:
              (1) the lowest order is the undiscounted continuation unigram
              N1+(. w) / N1+(. .) with no uniform floor, so a token with no
              continuation (e.g. <UNK> when no training word is rare) has
              probability 0 and perplexity is inf (nltk issues #3065, #3211);
              (2) below the highest order lambda(h) counts the distinct raw
              continuations of h, not those with a continuation count: with
              everygram padding they differ for all-<s> contexts, whose
              distributions then sum to more than 1; (3) order 1 divides by zero
              in nltk and raises here; its default discount is 0.1.
Both conventions map training tokens seen fewer than `unk_cutoff` times, and every
unseen token, to <UNK> (nltk's Vocabulary). tests/test_ngram_lm.py holds the nltk
mode equal to nltk.lm and shows each difference.
"""

import dataclasses
import itertools

import numpy as np

UNK, BOS, EOS = "<UNK>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
CONVENTIONS = ("textbook", "nltk")
SMOOTHINGS = ("mle", "lidstone", "kneser_ney", "katz", "stupid_backoff")
KATZ_MAX_DISCOUNTED = 5  # Katz's k: counts above it are trusted as they are


@dataclasses.dataclass(frozen=True, eq=False)
class Vocabulary:
  """tokens[i] is token id i: <UNK>, <s>, </s>, then the kept tokens sorted."""
  tokens: np.ndarray  # [V] str

  def __post_init__(self):
    order = np.argsort(self.tokens, kind="stable")
    object.__setattr__(self, "_sorted", self.tokens[order])
    object.__setattr__(self, "_ids", order)

  def __len__(self):
    return len(self.tokens)

  def encode(self, tokens) -> np.ndarray:
    """Ids of a sequence of str tokens, <UNK> for any not in the vocabulary."""
    tokens = np.asarray(tokens, dtype=str)
    pos = np.minimum(np.searchsorted(self._sorted, tokens), len(self) - 1)
    return np.where(self._sorted[pos] == tokens, self._ids[pos], UNK_ID)

  def decode(self, ids) -> list[str]:
    return self.tokens[np.asarray(ids, dtype=np.int64)].tolist()


@dataclasses.dataclass(frozen=True, eq=False)
class NgramCounts:
  """Counts of every k-gram, k = 1..order, of a padded training text.

  keys[k] holds the k-grams seen, sorted, as int keys: (row of the k-gram's first
  k-1 tokens in keys[k-1]) * V + its last id; keys[0] = [0] is the empty gram.
  counts[k][i] is how often keys[k][i] occurs (0 for one only seen as a context
  in the textbook convention); continuations[k][i] = N1+(. g), the number of
  distinct tokens seen before it (k < order); suffixes[k][i] is the row in keys[k-1]
  of its last k-1 tokens. support: the ids a model predicts.
  """
  vocab: Vocabulary
  order: int
  convention: str
  keys: tuple
  counts: tuple
  continuations: tuple
  suffixes: tuple
  support: np.ndarray

  def ends(self, ids, starts) -> tuple[list, list]:
    """For a stream ids [T] (starts [T]: a sequence begins) and k = 0..order: the row in
    keys[k] of the k-gram ending at each position, and of its first k-1 tokens (-1:
    unseen, or it would cross a sequence start)."""
    ends, prevs = [np.zeros(len(ids), np.int64)], [None]
    for k in range(1, self.order + 1):
      prevs.append(ends[0] if k == 1 else _shift(ends[-1], starts))
      ends.append(_find(self.keys[k], prevs[-1], ids, len(self.vocab)))
    return ends, prevs

  def count(self, tokens) -> int:
    """How often the k-gram `tokens` (str) occurs in the padded training text."""
    if not 1 <= len(tokens) <= self.order:
      raise ValueError(f"a k-gram of 1..{self.order} tokens, got {len(tokens)}")
    ids = self.vocab.encode(tokens)
    ends, _ = self.ends(ids, np.arange(len(ids)) == 0)
    return int(_take(self.counts[len(ids)], ends[len(ids)][-1:])[0])


def _shift(rows, starts):
  """rows[p - 1], -1 where p starts a sequence."""
  return np.where(starts, -1, np.roll(rows, 1))


def _find(keys, prev, ids, vocab_size):
  """Rows of keys holding (prev, ids) (-1 where prev is -1 or the pair is unseen)."""
  key = prev * vocab_size + ids
  pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
  return np.where((prev >= 0) & (keys[pos] == key), pos, -1)


def _take(values, rows):
  """values[rows], 0 where rows is -1."""
  return np.append(values, 0)[rows]


def _flatten(sentences):
  """Every token as one str array [W], and each sentence's length [S]."""
  if isinstance(sentences, str):
    raise TypeError("sentences must be a sequence of token sequences, not one str")
  lengths = np.fromiter(map(len, sentences), np.int64, len(sentences))
  return np.asarray(list(itertools.chain.from_iterable(sentences)), dtype=str), lengths


def _pad(words, lengths, order, convention):
  """Sentences' ids words [W] padded into one stream: ids [T], starts [T] (a sentence
  begins), predicted [T] (a word or </s>, not <s>)."""
  left, right = order - 1, (order - 1 if convention == "nltk" else 1)
  padded = lengths + left + right
  offsets = np.cumsum(padded) - padded
  ids = np.full(padded.sum(), EOS_ID, np.int64)
  shift = np.repeat(offsets + left - (np.cumsum(lengths) - lengths), lengths)
  ids[np.arange(len(words)) + shift] = words
  pos = np.arange(len(ids)) - np.repeat(offsets, padded)  # position within the sentence
  ids[pos < left] = BOS_ID
  return ids, pos == 0, pos >= left


def count_ngrams(sentences, order: int, *, unk_cutoff: int = 1,
                 convention: str = "textbook") -> NgramCounts:
  """Vocabulary and k-gram counts (k = 1..order) of tokenised sentences."""
  if not isinstance(order, (int, np.integer)) or order < 1:
    raise ValueError(f"order must be an int >= 1 (1 = unigram), got {order!r}")
  if unk_cutoff < 1:
    raise ValueError(f"unk_cutoff must be >= 1, got {unk_cutoff}")
  if convention not in CONVENTIONS:
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
  flat, lengths = _flatten(sentences)
  words, inverse, freq = np.unique(flat, return_inverse=True, return_counts=True)
  keep = (freq >= unk_cutoff) & ~np.isin(words, (UNK, BOS, EOS))
  vocab = Vocabulary(np.concatenate([[UNK, BOS, EOS], words[keep]]).astype(str))
  word_ids = np.where(keep, np.cumsum(keep) + 2, UNK_ID)  # = vocab.encode(words)
  for token, i in ((BOS, BOS_ID), (EOS, EOS_ID)):
    word_ids[words == token] = i
  specials = [UNK_ID, EOS_ID]  # the predictable specials (textbook)
  if convention == "nltk":  # nltk's vocabulary holds what its padding put in the stream
    specials = [UNK_ID, BOS_ID, EOS_ID] if order > 1 else [UNK_ID]
  support = np.concatenate([specials, np.arange(3, len(vocab))]).astype(np.int64)

  ids, starts, predicted = _pad(word_ids[inverse], lengths, order, convention)
  if not len(ids):
    raise ValueError("no tokens to count: sentences is empty (or, for nltk's order 1, "
                     "every sentence is)")
  counted = np.ones_like(predicted) if convention == "nltk" else predicted
  keys, counts, suffixes = [np.zeros(1, np.int64)], [np.array([counted.sum()])], []
  ends = np.zeros(len(ids), np.int64)  # row of the (k-1)-gram ending at each position
  for k in range(1, order + 1):
    prev = ends if k == 1 else _shift(ends, starts)
    valid = prev >= 0
    table, rows = np.unique(prev[valid] * len(vocab) + ids[valid], return_inverse=True)
    suffix = np.zeros(len(table), np.int64)  # row of each k-gram's last k-1 tokens
    suffix[rows] = ends[valid]
    ends = np.full(len(ids), -1, np.int64)
    ends[valid] = rows
    keys.append(table)
    counts.append(np.bincount(ends[counted & valid], minlength=len(table)))
    suffixes.append(suffix)
  continuations = tuple(  # N1+(. g): distinct (k+1)-grams with count > 0 ending in g
      np.bincount(suffixes[k][counts[k + 1] > 0], minlength=len(keys[k]))
      for k in range(order)) + (None,)
  return NgramCounts(vocab, order, convention, tuple(keys), tuple(counts),
                     continuations, (None, *suffixes), support)


def katz_discounts(counts: np.ndarray, max_discounted: int = KATZ_MAX_DISCOUNTED) -> np.ndarray:
  """Katz's Good-Turing discount ratio d_r for each count r in `counts` (one order's
  k-gram counts; 0 for k-grams only seen as contexts), see the module docstring."""
  counts = np.asarray(counts, np.int64)
  k = max_discounted
  n = np.bincount(counts[counts > 0], minlength=k + 2).astype(float)  # n[r]: count of counts
  r = np.arange(1, k + 1)
  common = (k + 1) * n[k + 1] / n[1] if n[1] else 0.0
  with np.errstate(divide="ignore", invalid="ignore"):
    r_star = (r + 1) * n[r + 1] / n[r]
    d = (r_star / r - common) / (1 - common)
  d = np.where(np.isfinite(d) & (d > 0) & (d <= 1), d, 1.0)
  table = np.concatenate([[1.0], d])  # index r = 0..k
  return np.where(counts <= k, table[np.minimum(counts, k)], 1.0)


class NgramLM:
  """A smoothed n-gram model over `counts` (see the module docstring)."""

  def __init__(self, counts: NgramCounts, smoothing: str = "kneser_ney", *,
               gamma: float = 1.0, discount: float = 0.75, alpha: float = 0.4):
    if smoothing not in SMOOTHINGS:
      raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
    if smoothing == "lidstone" and gamma <= 0:
      raise ValueError(f"gamma must be > 0 for lidstone (use 'mle' for 0), got {gamma}")
    if smoothing == "kneser_ney" and not 0 <= discount <= 1:
      raise ValueError(f"discount must be in [0, 1] for probabilities to sum to 1, "
                       f"got {discount}")
    if smoothing == "kneser_ney" and counts.order == 1 and counts.convention == "nltk":
      raise ValueError("nltk's Kneser-Ney needs order >= 2 (its unigram level divides by "
                       "the bigram continuation total); use convention='textbook'")
    self.counts, self.smoothing = counts, smoothing
    self.gamma, self.discount, self.alpha = gamma, discount, alpha
    n, c = counts.order, counts
    prefixes = [None] + [k // len(c.vocab) for k in c.keys[1:]]  # row of the context

    def per_context(k, values):
      return np.bincount(prefixes[k], values, minlength=len(c.keys[k - 1]))
    # Level k: (numerator counts, context totals, distinct continuations per context).
    self._levels = [None] + [
        (c.counts[k], per_context(k, c.counts[k]), per_context(k, c.counts[k] > 0.0))
        for k in range(1, n + 1)]
    if smoothing == "kneser_ney":  # c_KN: continuation counts below the highest order
      for k in range(1, n):
        cont = c.continuations[k]
        types = self._levels[k][2] if c.convention == "nltk" else per_context(k, cont > 0.0)
        self._levels[k] = (cont, per_context(k, cont), types)
    if smoothing == "katz":  # per level: discounted estimates of seen k-grams, alpha(h)
      self._katz = [None, (c.counts[1] / self._levels[1][1][0], None)]
      for k in range(2, n + 1):
        count, totals, _ = self._levels[k]
        seen, discounted = count > 0, katz_discounts(count) * count
        full = per_context(k, discounted) >= totals  # nothing left over (or unseen)
        safe = np.where(full, totals + 1, totals)[prefixes[k]]
        p_star = np.where(seen, discounted / safe, 0.0)
        lower = np.where(seen, self._katz[k - 1][0][c.suffixes[k]], 0.0)
        seen_mass, lower_mass = per_context(k, p_star), per_context(k, lower)
        # lower_mass reaches 1 when h's continuations exhaust the lower order: nothing
        # is left to back off to, and alpha(h) = 0.
        room = 1.0 - lower_mass
        alpha = np.where(room > 1e-12, (1.0 - seen_mass) / np.where(room > 1e-12, room, 1),
                         0.0)
        self._katz.append((p_star, alpha))

  def prob(self, ngrams) -> np.ndarray:
    """ids [m, order] -> P(last id | the order-1 ids before it), [m]."""
    ngrams = np.atleast_2d(np.asarray(ngrams, dtype=np.int64))
    m, n = ngrams.shape
    if n != self.counts.order:
      raise ValueError(f"ngrams must have order={self.counts.order} columns (pad a short "
                       f"context with <s>), got shape {ngrams.shape}")
    ends, prevs = self.counts.ends(ngrams.ravel(), np.arange(m * n) % n == 0)
    last = np.arange(m) * n + n - 1
    return self._prob([e[last] for e in ends], [None] + [p[last] for p in prevs[1:]])

  def score(self, word: str, context=()) -> float:
    """P(word | context), str tokens, like nltk's `score` (context: the order-1 before)."""
    return float(self.prob(self.counts.vocab.encode(list(context) + [word])[None])[0])

  def distribution(self, context) -> np.ndarray:
    """P(w | context) for w in counts.support; context: order-1 ids."""
    support = self.counts.support
    rows = np.concatenate([np.tile(np.asarray(context, np.int64), (len(support), 1)),
                           support[:, None]], axis=1)
    return self.prob(rows)

  def logprobs(self, sentences) -> np.ndarray:
    """Natural-log probability of every predicted token of the padded sentences, [T]."""
    c = self.counts
    flat, lengths = _flatten(sentences)
    ids, starts, predicted = _pad(c.vocab.encode(flat), lengths, c.order, c.convention)
    ends, prevs = c.ends(ids, starts)
    at = np.flatnonzero(predicted)
    with np.errstate(divide="ignore"):
      return np.log(self._prob([e[at] for e in ends], [None] + [p[at] for p in prevs[1:]]))

  def sentence_logprob(self, sentence) -> float:
    """log P(sentence): the chain rule, sum over its tokens and </s> of log P(w | context)."""
    return float(self.logprobs([sentence]).sum())

  def perplexity(self, sentences) -> float:
    """exp(mean negative log-probability per predicted token); inf if one is 0 (MLE)."""
    return float(np.exp(-self.logprobs(sentences).mean()))

  def generate(self, rng: np.random.Generator, max_tokens: int = 100, prefix=()) -> list[str]:
    """Tokens sampled one at a time after <s>... and `prefix`, until </s>.

    Stupid backoff's scores are normalised over the vocabulary before sampling."""
    c = self.counts
    context = list(np.concatenate([np.full(c.order - 1, BOS_ID), c.vocab.encode(list(prefix))]))
    out = []
    for _ in range(max_tokens):
      last = context[len(context) - c.order + 1:]
      p = self.distribution(last)
      if not p.sum() > 0:
        raise ValueError(f"no continuation of {c.vocab.decode(last)} under "
                         f"{self.smoothing} (an unseen context)")
      token = rng.choice(c.support, p=p / p.sum())
      if token == EOS_ID:
        break
      out.append(token)
      context.append(token)
    return c.vocab.decode(out)

  def _prob(self, grams, contexts):
    """P(w | h) for a batch, given for each level k = 1..order the rows of the k-grams
    ending in w (grams[k], in keys[k]) and of their contexts (contexts[k], in keys[k-1])."""
    n = self.counts.order

    def count(k):  # c(h w) at level k (continuation counts below the top for Kneser-Ney)
      return _take(self._levels[k][0], grams[k])

    def total(k):  # sum over v of c(h v)
      return _take(self._levels[k][1], contexts[k])
    if self.smoothing in ("mle", "lidstone"):
      gamma = self.gamma if self.smoothing == "lidstone" else 0.0
      num, den = count(n) + gamma, total(n) + gamma * len(self.counts.support)
      return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
    if self.smoothing == "katz":
      p = _take(self._katz[1][0], grams[1])
      for k in range(2, n + 1):
        p_star, alpha = self._katz[k]
        seen = count(k) > 0
        backoff = np.where(total(k) > 0, _take(alpha, contexts[k]), 1.0)
        p = np.where(seen, _take(p_star, grams[k]), backoff * p)
      return p
    if self.smoothing == "stupid_backoff":
      p = count(1) / total(1)
      for k in range(2, n + 1):
        c, t = count(k), total(k)
        p = np.where(c > 0, c / np.where(t > 0, t, 1), self.alpha * p)
      return p
    d = self.discount  # Kneser-Ney, from the bottom level up
    if self.counts.convention == "nltk":
      p, first = count(1) / total(1), 2
    else:
      p, first = np.full(len(grams[0]), 1.0 / len(self.counts.support)), 1
    for k in range(first, n + 1):
      c, t = count(k), total(k)
      types = _take(self._levels[k][2], contexts[k])
      safe = np.where(t > 0, t, 1)
      p = np.where(t > 0, np.maximum(c - d, 0) / safe + d * types / safe * p, p)
    return p
