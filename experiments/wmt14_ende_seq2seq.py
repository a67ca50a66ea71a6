"""WMT14 German -> English: a small GNMT (BiLSTM encoder, Luong attention).

WMT14 German -> English with subwords: a bidirectional-LSTM encoder and an
LSTM decoder with multiplicative (Luong) attention and input feeding, a small
GNMT (Wu et al. 2016), trained with teacher forcing, evaluated by greedy
decoding (exact match of the whole sentence: a strict floor under BLEU).

Data: TFDS `wmt14_translate/de-en` (4.5M training pairs; validation is
newstest2013, test newstest2014); `wmt_t2t_translate/de-en` is read the same
way. A shared 16k-piece BPE vocabulary (SentencePiece) is trained once on
100,000 evenly spaced training pairs and cached under data_dir; pairs longer
than 64 pieces on a side are dropped from training, truncated in evaluation.
`config.data.source_language = "en"` turns the direction round.

  python -m deeplearn.train --config experiments/wmt14_ende_seq2seq.py --workdir runs/wmt14

The first run downloads the corpora (several GB) and prepares them into
config.data.data_dir. Here (2-core CPU, no internet, 2026-11-22) only the
`:tiny` variant was run, on TFDS mock data (tests/test_translation_data.py):
no WMT result is claimed. The full model has 26,208,384 parameters
(jax.eval_shape; 8.2M of them the 16k x 512 output layer).
"""

import ml_collections

from deeplearn.config import default_config
from deeplearn.experiments import variants

VOCAB = 16_000

VARIANTS = {"tiny": "12 steps of a small model; mock data where WMT14 is not prepared"}


def get_config(arg=None):
  chosen = variants(arg, VARIANTS)
  config = default_config()
  config.model = ml_collections.ConfigDict({
      "name": "seq2seq", "vocab_size": VOCAB, "embed_dim": 256, "hidden_size": 512,
      "encoder_layers": 2, "cell": "lstm", "attention": "luong", "attention_dim": 512,
      "dropout_rate": 0.2, "pad_id": 0})

  config.data.dataset = "wmt14_translate/de-en"
  config.data.vocab_size = VOCAB
  config.data.tokenizer_examples = 100_000
  config.data.seq_len = 64  # subwords per side, EOS included
  config.data.batch_size = 128
  config.data.eval_split = "validation"  # newstest2013; "test" is newstest2014
  config.data.eval_batch_size = 512

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.grad_clip_norm = 5.0  # GNMT's
  config.schedule.name = "cosine"
  config.schedule.warmup_steps = 2000
  config.schedule.end_factor = 0.05

  config.train.num_steps = 200_000
  config.train.log_every = 500
  config.train.eval_every = 10_000
  config.train.checkpoint_every = 5000

  if "tiny" in chosen:
    config.data.mock_examples = 200  # where the dataset is not prepared
    config.model.update(vocab_size=128, embed_dim=16, hidden_size=32, encoder_layers=1,
                        attention_dim=32, dropout_rate=0.0)
    config.data.update(vocab_size=128, tokenizer_examples=1000, seq_len=12, batch_size=16,
                       eval_batch_size=32)
    config.optimizer.learning_rate = 1e-2
    config.schedule.warmup_steps = 2
    config.train.update(num_steps=12, log_every=4, eval_every=12, checkpoint_every=12)
  return config
