"""Vision data: TFDS image datasets (mnist, cifar, imagenet2012, JPEGs of any size) and the
augmentation ops, through the grain pipeline."""

import io

from etils import epath
import grain
import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from deeplearn import data
from deeplearn.data import pipeline, preprocess
from deeplearn.data.builders.base import LocalBuilder

SIZES = [(40, 60), (75, 50), (64, 64), (48, 90), (90, 70)]  # (height, width) of the JPEGs


class VariableJpegs(LocalBuilder, skip_registration=True):
  """Smooth random RGB JPEGs of several sizes: ImageNet's storage, in miniature."""

  VERSION = tfds.core.Version("1.0.0")
  # TFDS looks for a builder's metadata in its package; tests/ is no package.
  pkg_dir_path = epath.Path(__file__).parent

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=5),
        }),
        supervised_keys=("image", "label"), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(20, 0), "test": self._generate_examples(7, 1)}

  def _generate_examples(self, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
      h, w = SIZES[i % len(SIZES)]
      coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
      buf = io.BytesIO()
      Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR).save(buf, "JPEG")
      yield i, {"image": buf.getvalue(), "label": i % 5}  # bytes: TFDS stores them as they are


@pytest.fixture
def cfg(tfds_data_dir, monkeypatch):
  monkeypatch.setitem(pipeline.BUILDERS, "variable_jpegs", VariableJpegs)

  def make(**overrides):
    c = ml_collections.ConfigDict(dict(
        dataset="variable_jpegs", data_dir=tfds_data_dir, manual_dir=None, train_split="train",
        eval_split="test", batch_size=8, eval_batch_size=8, num_workers=0, prepare=True,
        pp_train="random_resized_crop(32)|flip_lr|standardize('imagenet')",
        pp_eval="resize_small(36)|central_crop(32)|standardize('imagenet')"))
    c.update(overrides)
    return c
  return make


def take(ds, n, start_state=None):
  it = iter(ds)
  if start_state is not None:
    it.set_state(start_state)
  return [next(it) for _ in range(n)]


def concat(batches):
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def train(c, seed=0, n=4):
  return take(data.train_dataset(c, seed=seed, process_index=0, process_count=1), n)


def images(sizes, seed=0):
  rng = np.random.default_rng(seed)
  return [{"inputs": rng.integers(0, 256, (*s, 3), dtype=np.uint8), "label": np.int64(i)}
          for i, s in enumerate(sizes)]


# Ops.

def test_random_resized_crop_draws_torchvision_boxes(monkeypatch):
  boxes = []
  real_resize = preprocess.resize_image

  def recording_resize(x, size, box=None):
    boxes.append((x.shape[:2], box))
    return real_resize(x, size, box)

  monkeypatch.setattr(preprocess, "resize_image", recording_resize)
  op = preprocess.build("random_resized_crop(16)")
  out = op.fn(images([(60, 80)] * 400), np.random.default_rng(0))
  assert op.random and op.per_example
  assert out["inputs"].shape == (400, 16, 16, 3) and out["inputs"].dtype == np.uint8
  (h, w), = {shape for shape, _ in boxes}
  left, top, right, bottom = np.array([box for _, box in boxes]).T
  assert (left >= 0).all() and (top >= 0).all() and (right <= w).all() and (bottom <= h).all()
  bw, bh = right - left, bottom - top
  area, aspect = bw * bh / (h * w), bw / bh
  # Rounding the box to whole pixels moves area and aspect a little past their bounds.
  assert 0.06 < area.min() < 0.15 and area.max() > 0.9
  assert (aspect > 0.7).all() and (aspect < 1.4).all()
  assert aspect.min() < 0.8 and aspect.max() > 1.25
  assert len(set(zip(left, top))) > 300  # placed anywhere

  # No box of 90-100% of a 10x200 image has aspect 1: the fallback, the centre square.
  wide = images([(10, 200)])
  out = preprocess.build("random_resized_crop(8, (0.9, 1.0), (1.0, 1.0))").fn(
      wide, np.random.default_rng(0))
  assert boxes[-1] == ((10, 200), (95, 0, 105, 10))
  np.testing.assert_array_equal(
      out["inputs"][0], real_resize(wide[0]["inputs"], (8, 8), box=(95, 0, 105, 10)))


def test_resize_small_then_central_crop_takes_the_middle():
  x = images([(30, 50)])
  small = preprocess.build("resize_small(20)").fn(x, None)["inputs"]
  assert small.shape == (1, 20, 33, 3)  # 50 * 20 / 30 = 33.3, rounded down as torchvision
  tall = preprocess.build("resize_small(20)").fn(images([(50, 30)]), None)["inputs"]
  assert tall.shape == (1, 33, 20, 3)
  grid = {"inputs": np.arange(7 * 9 * 2, dtype=np.float32).reshape(1, 7, 9, 2)}
  crop = preprocess.build("central_crop(4)").fn(grid, None)["inputs"]
  np.testing.assert_array_equal(crop[0], grid["inputs"][0, 1:5, 2:6])
  rect = preprocess.build("central_crop((3, 5))").fn(grid, None)["inputs"]
  np.testing.assert_array_equal(rect[0], grid["inputs"][0, 2:5, 2:7])
  with pytest.raises(ValueError, match="resize_small"):
    preprocess.build("central_crop(8)").fn(grid, None)


def test_resize_is_bilinear_and_keeps_uint8_or_gives_float32():
  flat = {"inputs": np.full((2, 9, 13, 3), 200, np.uint8), "label": np.array([0, 1])}
  out = preprocess.build("resize(5)").fn(flat, None)
  assert out["inputs"].dtype == np.uint8 and out["inputs"].shape == (2, 5, 5, 3)
  assert (out["inputs"] == 200).all()
  np.testing.assert_array_equal(out["label"], [0, 1])
  x = images([(12, 16)])
  as_uint8 = preprocess.build("resize((6, 8))").fn(x, None)["inputs"]
  as_float = preprocess.build("to_float|resize((6, 8))").fn(x, None)["inputs"]
  assert as_float.dtype == np.float32 and as_float.shape == (1, 6, 8, 3)
  # PIL resamples uint8 in fixed point and rounds: within one grey level of float32.
  np.testing.assert_allclose(as_float, as_uint8, atol=1.0)
  # Shrinking 3x, PIL's filter spans several pixels (antialiased): columns alternating 0 and
  # 255 average to grey, where sampling one point per output pixel would keep 0s and 255s.
  stripes = np.broadcast_to((np.arange(24) % 2 * 255).astype(np.uint8)[None, None, :, None],
                            (1, 6, 24, 3))
  shrunk = preprocess.build("resize((6, 8))").fn({"inputs": stripes}, None)["inputs"]
  assert (shrunk > 100).all() and (shrunk < 155).all()


def test_standardize_is_per_channel_and_knows_imagenet():
  x = np.stack([np.full((4, 4), v, np.float32) for v in (10, 20, 30)], -1)[None]
  out = preprocess.build("standardize((10, 10, 20), (1, 2, 5))").fn({"inputs": x}, None)
  np.testing.assert_allclose(out["inputs"][0, 0, 0], [0, 5, 2])
  pixel = np.array([123.675, 116.28, 103.53], np.float32) + np.array([58.395, 57.12, 57.375])
  out = preprocess.build("standardize('imagenet')").fn({"inputs": pixel[None, None, None]}, None)
  np.testing.assert_allclose(out["inputs"].ravel(), [1, 1, 1], rtol=1e-6)
  with pytest.raises(ValueError, match="names none of.*imagenet"):
    preprocess.build("standardize('imagnet')")
  with pytest.raises(ValueError, match="mean and a std"):
    preprocess.build("standardize((1, 2, 3))")
  moments = preprocess.pooled_moments(np.array_split(np.arange(24.0).reshape(2, 2, 2, 3), 2))
  np.testing.assert_allclose(moments, preprocess.moments(np.arange(24.0).reshape(2, 2, 2, 3)),
                             rtol=1e-6)


def test_random_crop_pads_with_zeros_or_a_named_mode():
  x = {"inputs": np.ones((64, 4, 4, 1), np.float32)}
  zero = preprocess.build("random_crop(2)").fn(x, np.random.default_rng(0))["inputs"]
  assert set(np.unique(zero)) == {0.0, 1.0}
  reflect = preprocess.build("random_crop(2, 'reflect')").fn(x, np.random.default_rng(0))
  assert (reflect["inputs"] == 1).all()
  with pytest.raises(ValueError, match="random_crop"):
    preprocess.build("random_crop(2, 'mirror')")


def test_per_example_draws_follow_the_batch_seed_and_the_position_only():
  pp = preprocess.build("random_resized_crop(12)|flip_lr|to_float")
  batch = images([(40, 30), (25, 60), (33, 33)])
  a = pp.fn(batch, np.random.default_rng(5))
  np.testing.assert_array_equal(a["inputs"], pp.fn(batch, np.random.default_rng(5))["inputs"])
  b = pp.fn(batch, np.random.default_rng(6))
  assert not np.array_equal(a["inputs"], b["inputs"])
  # Example 0's crop does not depend on what else is in the batch.
  other = [batch[0]] + images([(70, 20), (50, 50)], seed=9)
  np.testing.assert_array_equal(pp.fn(other, np.random.default_rng(5))["inputs"][0],
                                a["inputs"][0])
  with pytest.raises(ValueError, match="different shapes.*random_resized_crop"):
    preprocess.build("resize_small(20)").fn(batch, None)


# Datasets.

@pytest.mark.parametrize("name,shape,classes", [
    ("mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10), ("cifar100", (32, 32, 3), 100)])
def test_small_image_datasets_standardize_per_channel_and_crop_and_flip(
    cfg, tmp_path, name, shape, classes):
  c = cfg(dataset=name, data_dir=str(tmp_path), batch_size=16, eval_batch_size=16,
          pp_train="standardize|random_crop(4)|flip_lr", pp_eval="standardize")
  with tfds.testing.mock_data(num_examples=32):
    info = data.get_info(c)
    augmented = train(c, n=4)
    plain = train(cfg(dataset=name, data_dir=str(tmp_path), batch_size=16, pp_train="standardize"),
                  n=4)
    evals = concat(list(data.eval_dataset(c, process_index=0, process_count=1)))
  assert (info.num_classes, info.input_shape) == (classes, shape)
  # mock_data draws every split from one generator: the training moments fit the test split.
  x = evals["inputs"]
  assert x.shape == (32, *shape)
  np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-4)
  np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-4)
  changed = 0
  for aug, ref in zip(concat(augmented)["inputs"], concat(plain)["inputs"]):
    assert aug.shape == shape
    padded = np.pad(ref, [(4, 4), (4, 4), (0, 0)])
    candidates = [p[i:i + shape[0], j:j + shape[1]] for p in (padded, padded[:, ::-1])
                  for i in range(9) for j in range(9)]
    assert any(np.array_equal(aug, cand) for cand in candidates)  # a crop of it, maybe mirrored
    changed += not np.array_equal(aug, ref)
  assert changed > 48  # of 64


def test_imagenet2012_crops_to_the_configured_size_deterministically(cfg, tmp_path):
  c = cfg(dataset="imagenet2012", data_dir=str(tmp_path), eval_split="validation")
  with tfds.testing.mock_data(num_examples=20):  # images of 5..49 pixels a side
    source = tfds.builder("imagenet2012", data_dir=str(tmp_path)).as_data_source(split="train")
    assert len({source[i]["image"].shape for i in range(20)}) > 10
    info = data.get_info(c)
    first = train(c, seed=0)
    again = train(c, seed=0)
    other = train(c, seed=1)
    evals = list(data.eval_dataset(c, process_index=0, process_count=1))
    with pytest.raises(ValueError, match=r"pp_train=''.*differ in size.*random_resized_crop"):
      data.train_dataset(cfg(dataset="imagenet2012", data_dir=str(tmp_path), pp_train=""),
                         seed=0, process_index=0, process_count=1)
  assert (info.num_classes, info.input_shape) == (1000, (32, 32, 3))
  assert info.num_examples == {"train": 20, "validation": 20}
  for batch in first + evals:
    assert batch["inputs"].shape == (8, 32, 32, 3) and batch["inputs"].dtype == np.float32
  np.testing.assert_equal(first, again)
  assert not np.array_equal(first[0]["inputs"], other[0]["inputs"])
  assert len(evals) == 3 and sum(b["mask"].sum() for b in evals) == 20


def test_imagenet2012_without_its_tars_names_the_manual_download(cfg, tmp_path):
  c = cfg(dataset="imagenet2012", data_dir=str(tmp_path / "tfds"),
          manual_dir=str(tmp_path / "manual"))
  with pytest.raises(ValueError, match=r"(?s)ILSVRC2012_img_train\.tar.*config\.data\.manual_dir"):
    data.get_info(c)


def test_variable_size_jpegs_are_decoded_cropped_and_resume_from_a_checkpoint(cfg):
  c = cfg()
  info = data.get_info(c)
  table = pipeline._table(pipeline._open(c), "train", "", None)
  assert isinstance(table, pipeline._Records)  # images of any size are read from disk
  assert {ex["inputs"].shape[:2] for ex in table.examples(range(5))} == set(SIZES)
  assert info.input_shape == (32, 32, 3) and info.num_examples == {"train": 20, "test": 7}

  ds = data.train_dataset(c, seed=3, process_index=0, process_count=1)
  batches = take(ds, 6)  # 2.4 epochs
  assert all(b["inputs"].shape == (8, 32, 32, 3) for b in batches)
  it = iter(ds)
  take(it, 2)
  np.testing.assert_equal(take(ds, 4, start_state=it.get_state()), batches[2:])
  grain.experimental.assert_equal_output_after_checkpoint(
      grain.experimental.LimitIterDataset(ds, count=5))
  first_epoch = concat(batches[:3])["label"][:20]  # the split, once, in a seeded order
  assert sorted(first_epoch) == sorted(i % 5 for i in range(20))

  evals = concat(list(data.eval_dataset(c, process_index=0, process_count=1)))
  assert evals["inputs"].shape == (8, 32, 32, 3) and evals["mask"].sum() == 7
  assert (evals["inputs"][7] == 0).all()  # padding


def test_bare_standardize_measures_crops_of_variable_size_images(cfg, monkeypatch):
  monkeypatch.setattr(pipeline, "STATS_CHUNK", 6)  # 20 examples in 4 chunks
  c = cfg(eval_split="train", eval_batch_size=20, pp_eval="resize(16)|standardize")
  x = concat(list(data.eval_dataset(c, process_index=0, process_count=1)))["inputs"]
  np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-4)
  np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-4)
