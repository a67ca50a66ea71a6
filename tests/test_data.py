"""The data stack: offline TFDS builders, the grain pipeline, preprocessing ops."""

import gzip

import grain
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from deeplearn import data
from deeplearn.data import pipeline, preprocess
from deeplearn.data.builders import tiny_shakespeare


@pytest.fixture
def cfg(tfds_data_dir):
  """A data config factory: mnist1d unless told otherwise."""
  def make(**overrides):
    c = ml_collections.ConfigDict(dict(
        dataset="mnist1d", data_dir=tfds_data_dir, train_split="train", eval_split="test",
        batch_size=100, eval_batch_size=300, pp_train="", pp_eval="", num_workers=0,
        prepare=True))
    c.update(overrides)
    return c
  return make


def take(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


def rows(batches, key="inputs"):
  """The batches' examples, one hashable row each."""
  return [r.tobytes() for b in batches for r in b[key]]


def concat(batches):
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


# Builders.

def test_mnist1d_is_the_published_split_of_the_mnist1d_package(cfg):
  from mnist1d.data import get_dataset_args, make_dataset
  ref = make_dataset(get_dataset_args())
  info = data.get_info(cfg())
  assert info.num_examples == {"train": 4000, "test": 1000}
  assert (info.num_classes, info.input_shape, info.task) == (10, (40,), "classification")
  for split, x, y in [("train", ref["x"], ref["y"]), ("test", ref["x_test"], ref["y_test"])]:
    got = concat(list(data.eval_dataset(cfg(eval_batch_size=1000), split=split,
                                        process_index=0, process_count=1)))
    np.testing.assert_array_equal(got["inputs"], x.astype(np.float32))
    np.testing.assert_array_equal(got["label"], y)


def test_digits_is_a_fixed_seeded_split_of_sklearn_digits(cfg):
  from sklearn.datasets import load_digits
  digits = load_digits()
  order = np.random.default_rng(0).permutation(1797)
  info = data.get_info(cfg(dataset="digits"))
  assert info.num_examples == {"train": 1437, "test": 360}
  assert info.input_shape == (8, 8, 1)
  got = concat(list(data.eval_dataset(cfg(dataset="digits", eval_batch_size=360),
                                      process_index=0, process_count=1)))
  np.testing.assert_array_equal(got["inputs"][..., 0], digits.images[order[1437:]])
  np.testing.assert_array_equal(got["label"], digits.target[order[1437:]])


def test_tiny_shakespeare_splits_vocab_and_windows(cfg, tfds_data_dir):
  c = cfg(dataset="tiny_shakespeare", seq_len=128, batch_size=16, eval_split="validation",
          eval_batch_size=64)
  info = data.get_info(c)
  text = tiny_shakespeare.read_text()
  assert len(text) == 1_115_394
  assert info.vocab == "".join(sorted(set(text))) and info.vocab_size == 65
  assert info.task == "language_model" and info.input_shape == (128,)
  builder = tiny_shakespeare.TinyShakespeareLocal(data_dir=tfds_data_dir,
                                                  file_format="array_record")
  sizes = {s: len(builder.as_data_source(split=s)[0]["text"]) for s in builder.info.splits}
  assert sizes == {"train": 1_003_854, "validation": 55_770, "test": 55_770}
  assert info.num_examples["validation"] == (55_770 - 1) // 128

  first = next(iter(data.eval_dataset(c, process_index=0, process_count=1)))
  assert first["inputs"].dtype == np.int32 and first["inputs"].shape == (64, 128)
  decoded = "".join(info.vocab[i] for i in first["inputs"][:2].ravel())
  assert decoded == text[1_003_854:1_003_854 + 256]  # windows at stride seq_len, in order
  np.testing.assert_array_equal(first["targets"][:, :-1], first["inputs"][:, 1:])
  np.testing.assert_array_equal(first["targets"][0, -1], first["inputs"][1, 0])

  batch = next(iter(data.train_dataset(c, seed=0, process_index=0, process_count=1)))
  assert set(batch) == {"inputs", "targets"} and batch["targets"].shape == (16, 128)
  np.testing.assert_array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])


def test_a_corrupted_tiny_shakespeare_is_refused(tmp_path, monkeypatch):
  text = tiny_shakespeare.read_text()  # the shipped copy passes its checksum
  corrupted = tmp_path / "tinyshakespeare.txt.gz"
  corrupted.write_bytes(gzip.compress(text.replace("ROMEO", "ROMEX", 1).encode()))
  with pytest.raises(ValueError, match="SHA-256"):
    tiny_shakespeare.read_text(corrupted)
  monkeypatch.setattr(tiny_shakespeare.TinyShakespeareLocal, "TEXT_PATH", corrupted)
  builder = tiny_shakespeare.TinyShakespeareLocal(data_dir=str(tmp_path / "tfds"),
                                                  file_format="array_record")
  with pytest.raises(ValueError, match="not the tiny shakespeare corpus"):
    builder.download_and_prepare()


# Training order: deterministic, reshuffled each epoch, sharded by process.

def test_the_same_seed_gives_the_same_batches_and_another_seed_others(cfg):
  c = cfg(dataset="digits", batch_size=32, pp_train="standardize|random_crop(1)|flip_lr")
  a = take(data.train_dataset(c, seed=3, process_index=0, process_count=1), 5)
  b = take(data.train_dataset(c, seed=3, process_index=0, process_count=1), 5)
  other = take(data.train_dataset(c, seed=4, process_index=0, process_count=1), 5)
  np.testing.assert_equal(a, b)
  assert not np.array_equal(a[0]["label"], other[0]["label"])
  assert not np.array_equal(a[0]["inputs"], other[0]["inputs"])


def test_each_epoch_is_a_new_permutation_of_the_training_split(cfg):
  batches = take(data.train_dataset(cfg(), seed=0, process_index=0, process_count=1), 80)
  train = concat(list(data.eval_dataset(cfg(eval_batch_size=1000), split="train",
                                        process_index=0, process_count=1)))
  epoch0, epoch1 = rows(batches[:40]), rows(batches[40:])
  assert sorted(epoch0) == sorted(epoch1) == sorted(rows([train]))
  assert epoch0 != epoch1


def test_shuffle_false_takes_the_split_in_order_every_epoch(cfg):
  # batch 150 over 4,000 examples: batch 26 straddles the first two epochs
  batches = take(data.train_dataset(cfg(batch_size=150, shuffle=False), seed=0,
                                    process_index=0, process_count=1), 60)
  train = concat(list(data.eval_dataset(cfg(eval_batch_size=1000), split="train",
                                        process_index=0, process_count=1)))
  stream = concat(batches)["inputs"]
  np.testing.assert_array_equal(stream[:4000], train["inputs"][:4000])
  np.testing.assert_array_equal(stream[4000:8000], train["inputs"][:4000])


def test_processes_see_disjoint_shards_that_make_up_the_global_batches(cfg):
  c = cfg(batch_size=200)
  shards = [take(data.train_dataset(c, seed=0, process_index=i, process_count=2), 20)
            for i in range(2)]
  assert all(b["inputs"].shape == (100, 40) for shard in shards for b in shard)
  seen = [set(rows(shard)) for shard in shards]
  assert len(seen[0]) == len(seen[1]) == 2000 and not seen[0] & seen[1]
  # Process i's batch j is global batch j's i-th slice, so 1 and 2 processes train alike.
  single = take(data.train_dataset(c, seed=0, process_index=0, process_count=1), 20)
  for j in range(20):
    np.testing.assert_equal(concat([shards[0][j], shards[1][j]]), single[j])


def test_processes_draw_different_random_augmentations(cfg):
  flips = []
  for i in range(2):
    plain, flipped = (next(iter(data.train_dataset(
        cfg(dataset="digits", batch_size=128, pp_train=pp), seed=0, process_index=i,
        process_count=2))) for pp in ("", "flip_lr"))
    flips.append([not np.array_equal(a, b) for a, b in zip(plain["inputs"], flipped["inputs"])])
  assert 16 < sum(flips[0]) < 48 and flips[0] != flips[1]


# Evaluation: padded, masked, in order, the same on any number of processes.

def test_eval_batches_are_padded_and_masked_and_agree_across_process_counts(cfg):
  c = cfg(eval_batch_size=300, pp_eval="standardize")
  ds = data.eval_dataset(c, process_index=0, process_count=1)
  single = list(ds)
  assert len(single) == 4 and all(b["inputs"].shape == (300, 40) for b in single)
  assert all(b["mask"].dtype == np.float32 for b in single)
  assert sum(b["mask"].sum() for b in single) == 1000
  np.testing.assert_array_equal(concat(single)["mask"], np.arange(1200) < 1000)
  np.testing.assert_equal(list(ds), single)  # iterating again starts over
  shards = [list(data.eval_dataset(c, process_index=i, process_count=2)) for i in range(2)]
  assert len(shards[0]) == len(shards[1]) == 4
  assert all(b["inputs"].shape == (150, 40) for shard in shards for b in shard)
  for j in range(4):
    np.testing.assert_equal(concat([shards[0][j], shards[1][j]]), single[j])


# Checkpointing the iterator.

def test_iterator_state_restores_the_same_batches(cfg, tmp_path):
  c = cfg(dataset="digits", batch_size=64, pp_train="standardize|random_crop(1)|flip_lr")
  ds = data.train_dataset(c, seed=0, process_index=0, process_count=1)
  it = iter(ds)
  take(it, 7)
  state = it.get_state()
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(7, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    expected = take(it, 30)  # crosses the epoch boundary at batch 22
    fresh = iter(data.train_dataset(c, seed=0, process_index=0, process_count=1))
    manager.restore(7, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  np.testing.assert_equal(take(fresh, 30), expected)
  again = iter(ds)
  again.set_state(state)
  np.testing.assert_equal(take(again, 30), expected)
  grain.experimental.assert_equal_output_after_checkpoint(
      grain.experimental.LimitIterDataset(ds, count=6))


def test_worker_processes_give_the_same_checkpointable_batches(cfg):
  c = cfg(pp_train="standardize|flip_lr")
  expected = take(data.train_dataset(c, seed=0, process_index=0, process_count=1), 8)
  it = iter(data.train_dataset(cfg(pp_train="standardize|flip_lr", num_workers=2), seed=0,
                               process_index=0, process_count=1))
  np.testing.assert_equal(take(it, 5), expected[:5])
  state = it.get_state()
  resumed = iter(data.train_dataset(cfg(pp_train="standardize|flip_lr", num_workers=2), seed=0,
                                    process_index=0, process_count=1))
  resumed.set_state(state)
  np.testing.assert_equal(take(resumed, 3), expected[5:])


# Preprocessing.

def test_pp_strings_parse_into_ops_with_literal_arguments():
  assert preprocess.parse("standardize|random_crop(4)|flip_lr") == [
      ("standardize", ()), ("random_crop", (4,)), ("flip_lr", ())]
  assert preprocess.parse(" scale(1/255) | standardize((0.5,), (2.0,)) ") == [
      ("scale", (1 / 255,)), ("standardize", ((0.5,), (2.0,)))]
  assert preprocess.parse("") == []
  with pytest.raises(ValueError, match="literals"):
    preprocess.parse("scale(__import__('os').getpid())")
  with pytest.raises(ValueError, match="random_crop"):
    preprocess.build("random_crop")  # its padding is required


def test_an_unknown_op_names_the_known_ones(cfg):
  with pytest.raises(ValueError, match="known ops: .*flip_lr.*standardize"):
    preprocess.parse("standardise")
  with pytest.raises(ValueError, match="config.data.pp_train="):
    data.train_dataset(cfg(pp_train="flip_ud"), seed=0, process_index=0, process_count=1)


@pytest.mark.parametrize("dataset,axes", [("mnist1d", None), ("digits", (0, 1, 2))])
def test_standardize_uses_the_training_split_moments(cfg, dataset, axes):
  c = cfg(dataset=dataset, eval_batch_size=1000, pp_eval="standardize")
  train = concat(list(data.eval_dataset(c, split="train", process_index=0, process_count=1)))
  x = train["inputs"][train["mask"] == 1]
  np.testing.assert_allclose(x.mean(axis=axes), 0, atol=1e-4)
  np.testing.assert_allclose(x.std(axis=axes), 1, atol=1e-4)
  explicit = preprocess.build("standardize(2.0, 4.0)")
  out = explicit.fn({"inputs": np.array([[2.0, 6.0]])}, None)["inputs"]
  np.testing.assert_allclose(out, [[0.0, 1.0]])


def test_random_crop_shifts_each_example_within_the_padding_and_is_seeded():
  x = np.arange(5 * 10, dtype=np.float32).reshape(5, 10) + 1
  crop = preprocess.OPS["random_crop"](2)
  out = crop.fn({"inputs": x}, np.random.default_rng(0))["inputs"]
  assert crop.random and out.shape == x.shape
  padded = np.pad(x, [(0, 0), (2, 2)])
  for row, p in zip(out, padded):
    assert any(np.array_equal(row, p[o:o + 10]) for o in range(5))
  again = crop.fn({"inputs": x}, np.random.default_rng(0))["inputs"]
  np.testing.assert_array_equal(out, again)

  images = np.random.default_rng(1).random((64, 6, 7, 3)).astype(np.float32)
  out = crop.fn({"inputs": images}, np.random.default_rng(0))["inputs"]
  assert out.shape == images.shape
  padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)])
  for img, p in zip(out, padded):
    assert any(np.array_equal(img, p[i:i + 6, j:j + 7]) for i in range(5) for j in range(5))
  assert sum(np.array_equal(a, b) for a, b in zip(out, images)) < 16  # most are shifted


def test_flip_lr_mirrors_a_seeded_random_half_of_the_batch():
  images = np.random.default_rng(1).random((64, 4, 5, 2)).astype(np.float32)
  flip = preprocess.OPS["flip_lr"]()
  out = flip.fn({"inputs": images}, np.random.default_rng(0))["inputs"]
  flipped = np.array([np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images)])
  kept = np.array([np.array_equal(o, x) for o, x in zip(out, images)])
  assert np.all(flipped ^ kept) and 16 < flipped.sum() < 48
  again = flip.fn({"inputs": images}, np.random.default_rng(0))["inputs"]
  np.testing.assert_array_equal(out, again)


def test_deterministic_ops():
  batch = {"inputs": np.full((2, 3, 3), 255, np.uint8), "label": np.array([1, 3])}
  out = preprocess.build("to_float|scale(1/255)|add_channel|onehot(4)").fn(batch, None)
  assert out["inputs"].dtype == np.float32 and out["inputs"].shape == (2, 3, 3, 1)
  np.testing.assert_allclose(out["inputs"], 1.0)
  np.testing.assert_array_equal(out["label"], [1, 3])
  np.testing.assert_array_equal(out["label_onehot"], [[0, 1, 0, 0], [0, 0, 0, 1]])


# Configuration errors name the key.

def test_config_errors_name_the_offending_key(cfg, tmp_path):
  with pytest.raises(ValueError, match="config.data.batch_size=100"):
    data.train_dataset(cfg(), seed=0, process_index=0, process_count=3)
  with pytest.raises(ValueError, match="config.data.eval_batch_size=300"):
    data.eval_dataset(cfg(), process_index=0, process_count=7)
  with pytest.raises(ValueError, match="config.data.dataset='no_such_dataset'"):
    data.get_info(cfg(dataset="no_such_dataset"))
  with pytest.raises(ValueError, match="config.data.train_split='trian'"):
    data.train_dataset(cfg(train_split="trian"), seed=0, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="config.data.seq_len"):
    data.train_dataset(cfg(dataset="tiny_shakespeare"), seed=0, process_index=0,
                       process_count=1)
  with pytest.raises(ValueError, match="config.data.pp_eval"):
    data.eval_dataset(cfg(pp_eval="flip_lr"), process_index=0, process_count=1)
  with pytest.raises(ValueError, match="config.data.prepare=False"):
    data.get_info(cfg(dataset="digits", data_dir=str(tmp_path), prepare=False))


# TFDS catalog datasets go through the same pipeline.

@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_a_catalog_dataset_reads_through_the_same_pipeline(cfg, tmp_path, name, shape):
  c = cfg(dataset=name, data_dir=str(tmp_path), batch_size=8, eval_batch_size=8,
          pp_train="scale(1/255)|flip_lr", pp_eval="scale(1/255)")
  with tfds.testing.mock_data(num_examples=12):
    info = data.get_info(c)
    train = take(data.train_dataset(c, seed=0, process_index=0, process_count=1), 3)
    evals = list(data.eval_dataset(c, process_index=0, process_count=1))
    images = tfds.builder(name, data_dir=str(tmp_path)).as_data_source(split="test")
    images = np.stack([images[i]["image"] for i in range(12)])
  assert info.num_classes == 10 and info.input_shape == shape
  assert info.num_examples == {"train": 12, "test": 12}
  for batch in train + evals:
    assert "image" not in batch and batch["inputs"].shape == (8, *shape)
    assert batch["inputs"].dtype == np.float32 and batch["label"].dtype == np.int32
    assert 0 <= batch["inputs"].min() and batch["inputs"].max() <= 1
  assert len(evals) == 2 and sum(b["mask"].sum() for b in evals) == 12
  np.testing.assert_allclose(concat(evals)["inputs"][:12], images / np.float32(255), rtol=1e-6)


def test_splits_too_large_for_memory_are_read_from_disk_with_the_same_batches(
    cfg, monkeypatch):
  c = cfg(dataset="digits", batch_size=50, pp_train="standardize|random_crop(1)")
  in_memory = take(data.train_dataset(c, seed=0, process_index=0, process_count=1), 3)
  monkeypatch.setattr(pipeline, "IN_MEMORY_BYTES", -1)
  assert isinstance(pipeline._table(pipeline._open(c), "train", "", None), pipeline._Records)
  on_disk = take(data.train_dataset(c, seed=0, process_index=0, process_count=1), 3)
  np.testing.assert_equal(on_disk, in_memory)
