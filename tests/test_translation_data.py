"""Translation data: the shared subword tokenizer and TFDS wmt14_translate / wmt_t2t_translate
through the pipeline, on TFDS mock data (the real corpora are gigabytes to download)."""

import json
import math
import os

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from deeplearn import config as config_lib, data, models, train
from deeplearn.data import subword
from deeplearn.models.seq2seq import greedy_decode
from deeplearn.tasks.seq2seq import Seq2Seq as Seq2SeqTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBJECTS = [("der Hund", "the dog"), ("die Katze", "the cat"), ("das Kind", "the child"),
            ("die Lehrerin", "the teacher"), ("der Nachbar", "the neighbour")]
VERBS = [("sieht", "sees"), ("liebt", "loves"), ("findet", "finds"), ("hört", "hears")]
OBJECTS = [("den Ball", "the ball"), ("das Buch", "the book"), ("die Zeitung", "the paper")]
SPLITS = {"train": (300, 0), "validation": (40, 1), "test": (40, 2)}  # (size, seed)


def sentence_pairs(n, seed):
  """Word-for-word German/English pairs; about a third with a second clause, long ones."""
  rng = np.random.default_rng(seed)
  pairs = []
  for _ in range(n):
    clauses = []
    for _ in range(1 + (rng.random() < 0.3)):
      s, v, o = (w[rng.integers(len(w))] for w in (SUBJECTS, VERBS, OBJECTS))
      clauses.append((f"{s[0]} {v[0]} {o[0]}", f"{s[1]} {v[1]} {o[1]}"))
    de, en = (" und ".join(c[0] for c in clauses), " and ".join(c[1] for c in clauses))
    pairs.append({"de": f"{de[0].upper()}{de[1:]}.", "en": f"{en[0].upper()}{en[1:]}."})
  return pairs


class PairSource:
  """A split of real-looking pairs, read like TFDS's array_record data source."""

  def __init__(self, split):
    self.examples = sentence_pairs(*SPLITS[split.split("[")[0]])

  def __len__(self):
    return len(self.examples)

  def __getitem__(self, i):
    return self.examples[i]

  def __getitems__(self, idx):
    return [self.examples[i] for i in idx]


def mock_pairs(builder, split, **kwargs):  # tfds.testing.mock_data's as_data_source_fn
  del builder, kwargs
  return PairSource(split)


def cfg(tmp_path, **overrides):
  c = ml_collections.ConfigDict(dict(
      dataset="wmt14_translate/de-en", data_dir=str(tmp_path), manual_dir=None,
      train_split="train", eval_split="validation", batch_size=16, eval_batch_size=16,
      num_workers=0, prepare=True, pp_train="", pp_eval="", seq_len=12, vocab_size=128,
      tokenizer_examples=1000, source_language=""))
  c.update(overrides)
  return c


def test_tokenizer_round_trips_text_and_trains_deterministically(tmp_path):
  texts = [t for p in sentence_pairs(300, 0) for t in (p["de"], p["en"])]
  a = subword.train(texts, str(tmp_path / "a.model"), 128)
  b = subword.train(texts, str(tmp_path / "b.model"), 128)
  assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
  assert a.vocab_size == 128
  assert [a.sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
  unseen = ["Die Lehrerin hört das Buch.", "The neighbour finds the paper."]
  for text in texts[:20] + unseen:
    ids = a.encode([text])[0]
    assert min(ids) > subword.EOS_ID  # no reserved id inside a text
    assert a.decode(ids) == text
    # Decoder output: BOS skipped, everything from EOS on ignored.
    assert a.decode([subword.BOS_ID, *ids, subword.EOS_ID, 9, 0, 0]) == text
  assert len(a.encode(["Die Katze"])[0]) < len("Die Katze")  # subwords, not chars


def test_wmt14_batches_are_subwords_then_eos_then_padding(tmp_path, caplog):
  c = cfg(tmp_path)
  with tfds.testing.mock_data(as_data_source_fn=mock_pairs):
    info = data.get_info(c)
    batches = [b for b, _ in zip(data.train_dataset(c, seed=0, process_index=0,
                                                    process_count=1), range(4))]
    evals = list(data.eval_dataset(c, process_index=0, process_count=1))
    reverse = data.get_info(cfg(tmp_path, source_language="en"))
    reverse_batch = next(iter(data.eval_dataset(cfg(tmp_path, source_language="en"),
                                                process_index=0, process_count=1)))
  tokenizer = subword.Tokenizer(info.tokenizer)
  assert info.tokenizer == str(tmp_path / "deeplearn_subword" / "wmt14_translate" / "de-en" /
                               "1.0.0" / "train-bpe128-n1000.model")
  assert reverse.tokenizer == info.tokenizer  # one vocabulary for both directions
  assert (info.task, info.vocab_size, info.input_shape) == ("seq2seq", 128, (12,))
  assert (info.bos_id, info.eos_id) == (subword.BOS_ID, subword.EOS_ID)

  # Training drops the pairs longer than seq_len (EOS included) on either side.
  pairs = sentence_pairs(*SPLITS["train"])
  fits = [max(len(ids) for ids in tokenizer.encode([p["de"], p["en"]])) + 1 <= 12
          for p in pairs]
  assert 0 < sum(fits) < len(pairs) and info.num_examples["train"] == sum(fits)
  assert f"[train]: {len(pairs) - sum(fits)} of 300 pairs are longer" in caplog.text
  kept = {(p["de"], p["en"]) for p, ok in zip(pairs, fits) if ok}
  for batch in batches:
    assert batch["inputs"].dtype == batch["targets"].dtype == np.int32
    assert batch["inputs"].shape == batch["targets"].shape == (16, 12)
    for row in np.concatenate([batch["inputs"], batch["targets"]]):
      end = list(row).index(subword.EOS_ID)  # exactly one EOS, then only PAD
      assert (row[:end] > subword.EOS_ID).all() and (row[end + 1:] == subword.PAD_ID).all()
    for src, tgt in zip(batch["inputs"], batch["targets"]):
      assert (tokenizer.decode(src), tokenizer.decode(tgt)) in kept

  # Evaluation keeps every pair: the long ones cut at seq_len, without EOS.
  valid = sentence_pairs(*SPLITS["validation"])
  assert info.num_examples["validation"] == len(valid) == 40
  assert len(evals) == 3 and sum(b["mask"].sum() for b in evals) == 40
  inputs = np.concatenate([b["inputs"] for b in evals])[:40]
  truncated = 0
  for row, pair in zip(inputs, valid):
    ids, en = (x + [subword.EOS_ID] for x in tokenizer.encode([pair["de"], pair["en"]]))
    np.testing.assert_array_equal(row[:min(len(ids), 12)], ids[:12])
    truncated += max(len(ids), len(en)) > 12
  assert truncated > 0
  assert f"[validation]: {truncated} of 40 pairs are longer than seq_len=12" in caplog.text
  # source_language="en": the same pairs the other way round, through the same vocabulary.
  np.testing.assert_array_equal(reverse_batch["inputs"], evals[0]["targets"])
  np.testing.assert_array_equal(reverse_batch["targets"], evals[0]["inputs"])


def test_wmt_t2t_is_read_the_same_way_with_its_own_cached_vocabulary(tmp_path):
  # tfds.testing.mock_data's own random examples cannot be read in batches here: its mocked
  # ArrayRecordDataSource.__getitems__ misses an argument (tfds 4.9.10), so pairs come from
  # as_data_source_fn.
  c = cfg(tmp_path, dataset="wmt_t2t_translate/de-en", vocab_size=100, seq_len=24)
  with tfds.testing.mock_data(as_data_source_fn=mock_pairs):
    info = data.get_info(c)
    again = data.get_info(cfg(tmp_path, dataset="wmt_t2t_translate/de-en", vocab_size=100,
                              seq_len=20))
    batch = next(iter(data.eval_dataset(c, process_index=0, process_count=1)))
  assert info.tokenizer.endswith(os.path.join("wmt_t2t_translate", "de-en", "1.0.0",
                                              "train-bpe100-n1000.model"))
  assert again.tokenizer == info.tokenizer and info.vocab_size == 100
  assert batch["inputs"].shape == batch["targets"].shape == (16, 24)
  assert batch["targets"].dtype == np.int32 and (batch["targets"] < 100).all()
  for row in batch["targets"]:  # ends with EOS and PAD, or is cut short with neither
    assert (row == subword.EOS_ID).sum() == 1 or (row > subword.EOS_ID).all()


@pytest.mark.parametrize("overrides,message", [
    (dict(vocab_size=0), r"config.data.vocab_size=0: .* subwords"),
    (dict(seq_len=0), r"config.data.seq_len=0: .* translation"),
    (dict(source_language="fr"), r"config.data.source_language='fr'.*\['de', 'en'\]")])
def test_translation_keys_are_checked_by_name(tmp_path, overrides, message):
  with tfds.testing.mock_data(as_data_source_fn=mock_pairs):
    with pytest.raises(ValueError, match=message):
      data.get_info(cfg(tmp_path, **overrides))


def test_tiny_experiment_trains_on_mock_wmt14_and_decodes_text(tmp_path):
  config = config_lib.from_file(os.path.join(ROOT, "experiments", "wmt14_ende_seq2seq.py:tiny"))
  config.data.data_dir = str(tmp_path / "tfds")
  config.train.progress = False
  workdir = str(tmp_path / "run")
  with tfds.testing.mock_data(as_data_source_fn=mock_pairs):
    # One device: compiling for 8 doubles the time, and data parallelism is tested elsewhere.
    summary = train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    info = data.get_info(config.data)
    batch = next(iter(data.eval_dataset(config.data, process_index=0, process_count=1)))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    losses = [r["loss"] for r in map(json.loads, f) if r.get("split") == "train"]
  assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
  assert summary["best"]["metric"] == "exact_match"

  # Greedy decoding's ids read back as text through the dataset's tokenizer.
  task = Seq2SeqTask(models.get_model(config.model), info)
  variables = task.init_variables(jax.random.key(0))
  tokens, _, _ = greedy_decode(task.model, variables, batch["inputs"][:4], max_len=12,
                               bos_id=info.bos_id, eos_id=info.eos_id)
  tokenizer = subword.Tokenizer(info.tokenizer)
  texts = [tokenizer.decode(row) for row in np.asarray(tokens)]
  assert all(isinstance(t, str) for t in texts)
  first = sentence_pairs(*SPLITS["validation"])[0]["en"]
  assert tokenizer.decode(batch["targets"][0]) == first  # a short one: not truncated
