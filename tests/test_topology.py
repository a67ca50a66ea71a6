"""A checkpoint restores onto a different number of devices and training goes
on as if the run had never moved: 8 -> 4, 8 -> 1 and 1 -> 8 devices.

The global batch is the same examples on any mesh (`mesh.data = -1` splits
it over the devices present), so only the order of floating-point sums may
differ from an uninterrupted 8-device run.
"""

import os
import shutil

import jax
import numpy as np
import pytest

from deeplearn import checkpoint, config as config_lib, data, metrics, step as step_lib, train
from deeplearn.schemes import supervised

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 20
RTOL = 1e-5


def tiny_config(data_dir, num_steps):
  config = config_lib.from_file(
      os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny"))
  config.data.data_dir = data_dir
  config.train.update(num_steps=num_steps, log_every=1, eval_every=STEPS,
                      checkpoint_every=STEPS // 2, progress=False)
  return config


def train_losses(workdir):
  records = metrics.read_records(os.path.join(workdir, "metrics.jsonl"),
                                 "train")
  return [r["step"] for r in records], np.array([r["loss"] for r in records])


def final_state(workdir, config, num_devices):
  """The newest checkpoint restored onto a mesh of `num_devices`."""
  run = supervised.build(config, devices=jax.devices()[:num_devices])
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  abstract = step_lib.abstract_state(run)
  state = ckpt.restore(ckpt.latest_step(), abstract)
  ckpt.close()
  return state


def devices(k):
  return jax.devices()[:k]


@pytest.fixture(scope="module")
def uninterrupted(tfds_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("topology") / "eight")
  config = tiny_config(tfds_data_dir, STEPS)
  train.train_and_evaluate(config, workdir, devices=devices(8))
  return workdir, config


@pytest.fixture(scope="module")
def halfway(tfds_data_dir, tmp_path_factory):
  """Workdirs that stopped at STEPS // 2, by the devices they ran on."""
  root = tmp_path_factory.mktemp("halfway")
  config = tiny_config(tfds_data_dir, STEPS // 2)
  workdirs = {}
  for k in (8, 1):
    workdirs[k] = str(root / str(k))
    train.train_and_evaluate(config, workdirs[k], devices=devices(k))
  return workdirs


@pytest.mark.parametrize("before,after", [(8, 4), (8, 1), (1, 8)])
def test_resuming_on_another_number_of_devices_continues_the_run(
    uninterrupted, halfway, tmp_path, before, after):
  reference, config = uninterrupted
  workdir = str(tmp_path / f"{before}_to_{after}")
  shutil.copytree(halfway[before], workdir)
  summary = train.train_and_evaluate(config, workdir, devices=devices(after))
  assert summary["resumed_from"] == STEPS // 2
  assert summary["devices"] == after and summary["mesh"]["data"] == after

  steps, losses = train_losses(workdir)
  ref_steps, ref_losses = train_losses(reference)
  assert steps == ref_steps == list(range(1, STEPS + 1))
  np.testing.assert_allclose(losses, ref_losses, rtol=RTOL)

  moved = final_state(workdir, config, after)
  assert int(moved.step) == STEPS
  assert moved.params["Dense_0"]["kernel"].sharding.mesh.size == after
  ref = final_state(reference, config, 8)
  for a, b in zip(jax.tree.leaves(jax.device_get(moved)),
                  jax.tree.leaves(jax.device_get(ref))):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-7)


def test_the_data_position_is_the_same_on_any_number_of_processes(
    tfds_data_dir):
  # A process's iterator state is the number of global batches taken, so a
  # checkpoint from 2 processes can set the iterator of 1 (or of 4).
  config = tiny_config(tfds_data_dir, STEPS)

  def iterators(count):
    return [iter(data.train_dataset(config.data, seed=0, process_index=i,
                                    process_count=count))
            for i in range(count)]

  two = iterators(2)
  for _ in range(5):
    for it in two:
      next(it)
  states = [it.get_state() for it in two]
  assert states[0] == states[1] == {"next_index": 5}
  following = [next(it) for it in two]  # global batch 5, in two halves
  for count in (1, 4):
    moved = iterators(count)
    for it in moved:
      it.set_state(states[0])
    halves = [next(it) for it in moved]
    for key in ("inputs", "label"):
      np.testing.assert_array_equal(
          np.concatenate([h[key] for h in halves]),
          np.concatenate([f[key] for f in following]))
