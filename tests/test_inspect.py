"""deeplearn.inspect: the train step compiled ahead of time, nothing run.

Data parallelism and FSDP move the theoretical minimum of collective bytes
(within 10%), tensor parallelism shows its per-block activation all-reduces,
the command line prints the table and writes JSON, and with libtpu a GPT-2
step compiles for a v5e slice and fits while an absurd one does not.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from deeplearn import config as config_lib, inspect as inspect_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST1D = os.path.join(ROOT, "experiments", "mnist1d_cnn.py")
FSDP_TP = os.path.join(ROOT, "experiments", "shakespeare_transformer_fsdp_tp.py")
needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install -e '.[tpu]'): --topology"
    " compiles for TPU slices through it")


def load(spec, data_dir, mesh=None, **model):
  config = config_lib.from_file(spec)
  config.data.data_dir = data_dir
  if mesh:
    config.mesh.update(mesh)
  config.model.update(model)
  return config


def test_data_parallel_all_reduces_the_gradient_bytes_once(tfds_data_dir):
  report = inspect_lib.inspect_step(load(MNIST1D + ":tiny", tfds_data_dir))
  assert report.mesh == {"data": 8}
  assert report.param_bytes == 5210 * 4 == report.param_bytes_per_device
  assert report.theory["all-reduce"] == report.param_bytes
  assert sum(report.theory.values()) == report.param_bytes
  measured = report.measured()
  assert measured["all-reduce"] == pytest.approx(report.param_bytes, rel=0.1)
  assert report.ratio() == pytest.approx(1.0, abs=0.1)
  # Adam's two moments, replicated like the parameters.
  assert report.optimizer_bytes_per_device >= 2 * report.param_bytes
  assert report.flops > 0 and report.memory["temp"] > 0
  assert report.chip is None and report.roofline is None


def test_fsdp_gathers_the_parameters_and_reduces_the_gradients_once(
    tfds_data_dir):
  # Unrolled layers: with scan_layers=True, XLA gathers each block's weights
  # again in the backward pass (about 1.8x the all-gather bytes).
  config = load(FSDP_TP + ":tiny", tfds_data_dir,
                mesh={"data": 1, "fsdp": -1, "model": 1}, scan_layers=False)
  report = inspect_lib.inspect_step(config)
  assert report.mesh == {"fsdp": 8}
  assert report.param_bytes_per_device < report.param_bytes / 4
  theory, measured = report.theory, report.measured()
  assert theory["all-gather"] == theory["reduce-scatter"] > 0.9 * report.param_bytes
  assert measured["all-gather"] == pytest.approx(theory["all-gather"], rel=0.1)
  # Gradients: a reduce-scatter on TPU; XLA:CPU all-reduces and keeps its
  # slice, the same bytes by the convention (the operand).
  reduced = measured["all-reduce"] + measured["reduce-scatter"]
  assert reduced == pytest.approx(
      theory["all-reduce"] + theory["reduce-scatter"], rel=0.1)
  assert report.ratio() == pytest.approx(1.0, abs=0.1)


def test_tensor_parallel_reports_the_activation_all_reduces(tfds_data_dir):
  config = load(FSDP_TP + ":tiny", tfds_data_dir,
                mesh={"data": -1, "fsdp": 1, "model": 2})
  report = inspect_lib.inspect_step(config)
  assert report.mesh == {"data": 4, "model": 2}
  batch, length, embed, layers = 16 // 4, 32, 32, 2
  activation = batch * length * embed * 4  # float32
  assert report.theory_tp_activations == 4 * layers * activation
  # On CPU the dense layers run as 2-D matmuls (layers.dot_general): the same
  # activations, flattened to [batch * length, embed].
  shapes = (f"f32[{batch},{length},{embed}]", f"f32[{batch * length},{embed}]")
  over_model = [c for c in report.collectives if c.kind == "all-reduce"
                and c.group_size == 2 and any(s in c.shapes for s in shapes)]
  moved = sum(sum(c.shapes.count(s) for s in shapes) * activation * c.count
              for c in over_model)
  # At least Megatron's four per block; XLA reduces the query, key and
  # value input gradients one by one, so more.
  assert report.theory_tp_activations <= moved <= 2 * report.theory_tp_activations


def test_the_command_line_prints_the_table_and_writes_json(tfds_data_dir,
                                                           tmp_path):
  out = tmp_path / "report.json"
  result = subprocess.run(
      [sys.executable, "-m", "deeplearn.inspect",
       f"--config={MNIST1D}:tiny", f"--config.data.data_dir={tfds_data_dir}",
       "--cpu_devices=4", f"--json={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "mesh data=4" in result.stdout
  assert "gradient/parameter collectives vs theory: 1.00x" in result.stdout
  report = json.loads(out.read_text())
  assert report["theory"]["all-reduce"] == 5210 * 4
  assert report["ratio"] == pytest.approx(1.0, abs=0.1)
  assert report["collectives"][0]["kind"] == "all-reduce"


def test_mock_data_stands_in_for_a_dataset_that_is_not_prepared(tmp_path):
  # imagenet2012 cannot be prepared here (manual download); its shapes can.
  result = subprocess.run(
      [sys.executable, "-m", "deeplearn.inspect", "--mock_data",
       f"--config={os.path.join(ROOT, 'experiments', 'imagenet_alexnet.py')}:tiny",
       f"--config.data.data_dir={tmp_path}", "--cpu_devices=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "mesh data=2" in result.stdout
  assert "FLOPs" in result.stdout


def test_unknown_topologies_name_the_valid_ones():
  with pytest.raises(ValueError, match=r"did you mean 'v6e'\?.*v5e:4x4"):
    inspect_lib.topology_devices("v6:8x8")
  with pytest.raises(ValueError, match="v5p slices are 3-D"):
    inspect_lib.topology_devices("v5p:4x4")


@needs_libtpu
def test_every_generation_gives_one_device_per_chip():
  for name, chips in (("v4:2x2x1", 4), ("v5p:2x2x2", 8), ("v6e:4x4", 16),
                      ("v5e:16x16", 256)):
    devices = inspect_lib.topology_devices(name)
    assert len(devices) == chips, name
    assert devices[0].platform == "tpu"


@needs_libtpu
def test_gpt2_fits_a_v5e_slice(tfds_data_dir):
  # GPT-2 small's model and context (1024); batch 8 and no dropout keep the
  # TPU compile near 45 s on 2 busy cores (batch 32 with dropout: 130-340 s).
  config = load(FSDP_TP + ":gpt2", tfds_data_dir, dropout_rate=0.0)
  config.data.batch_size = config.data.eval_batch_size = 8
  report = inspect_lib.inspect_step(config, topology="v5e:2x2")
  assert report.target == "v5e:2x2 (4 x TPU v5 lite)"
  assert report.mesh == {"fsdp": 2, "model": 2}
  assert report.num_params > 85_000_000
  assert report.fits and report.hbm_bytes_needed < 16e9
  # Parameters split four ways (norms and biases two ways), Adam's moments
  # like them.
  per_device = report.param_bytes_per_device
  assert report.param_bytes / 4 <= per_device < 1.02 * report.param_bytes / 4
  assert report.optimizer_bytes_per_device == pytest.approx(2 * per_device,
                                                            rel=0.001)
  assert report.roofline["step_s"] > 0
  assert "fits: " in inspect_lib.format_report(report)


@needs_libtpu
def test_an_absurd_model_does_not_fit(tfds_data_dir):
  # Two blocks 65,536 wide: 103 billion parameters, about 300 GB a chip.
  config = load(FSDP_TP + ":tiny", tfds_data_dir, embed_dim=65536,
                mlp_dim=4 * 65536)
  report = inspect_lib.inspect_step(config, topology="v5e:2x2")
  assert not report.fits
  assert report.hbm_bytes_needed > 10 * 16e9
  assert "does NOT fit: needs" in inspect_lib.format_report(report)


@needs_libtpu
def test_topologies_load_while_another_process_holds_libtpu():
  # A process that loaded libtpu the default way (a jax run with the TPU backend, a
  # pytest worker of another checkout) holds /tmp/libtpu_lockfile until it exits; a
  # second plain load then aborts. inspect's loader does not need the lock.
  load = ("from jax.experimental import topologies; topologies.get_topology_desc("
          "platform='tpu', topology_name='v5e:2x2', chip_config_name='default',"
          " chips_per_host_bounds=(2, 2, 1), num_slices=1); print('loaded', flush=True);"
          " import sys; sys.stdin.read()")
  env = {k: v for k, v in os.environ.items() if k != "ALLOW_MULTIPLE_LIBTPU_LOAD"}
  holder = subprocess.Popen([sys.executable, "-c", load], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
  try:
    # "loaded", or nothing where a third process holds the lock already: held either way.
    holder.stdout.readline()
    result = subprocess.run(
        [sys.executable, "-c", "from deeplearn import inspect;"
         " print(len(inspect.topology_devices('v5e:2x2')))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "4"
  finally:
    holder.communicate("", timeout=60)
