"""TPU slices this machine can compile for: each generation's published
figures, and a slice's devices as libtpu describes them (no TPU needed)."""

import dataclasses
import importlib.util
import os

from jax.experimental import mesh_utils, topologies

from deeplearn.config import did_you_mean
from deeplearn.parallel import mesh as mesh_lib


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU chip's published figures (per chip, bf16)."""
  hbm_bytes: float
  peak_flops: float  # FLOP/s, bf16
  hbm_bandwidth: float  # bytes/s
  ici_bandwidth: float  # bytes/s, bidirectional, all links of a chip
  dims: int  # 2: a 2D torus (v5e, v6e); 3: 3D (v4, v5p)
  host_bounds: tuple  # chips per host (only process indices follow)
  chip_config: str  # libtpu's name: one JAX device per chip


GiB = 2**30
# Google Cloud TPU docs, system architecture tables (read 2026-11):
#   v4  https://cloud.google.com/tpu/docs/v4: 275 TFLOP/s, 32 GiB, 1200 GB/s.
#       Its ICI per chip is not in that table: 6 links x 90 GB/s
#       (bidirectional) from the JAX scaling book, jax-ml.github.io/scaling-book/tpus.
#   v5e https://cloud.google.com/tpu/docs/v5e: 197 TFLOP/s, 16 GB, 819 GB/s,
#       ICI 400 GB/s bidirectional per chip.
#   v5p https://cloud.google.com/tpu/docs/v5p: 459 TFLOP/s, 95 GiB,
#       2765 GB/s, ICI 1200 GB/s bidirectional per chip.
#   v6e https://cloud.google.com/tpu/docs/v6e: 918 TFLOP/s, 32 GB,
#       1638 GB/s, ICI 800 GB/s bidirectional per chip.
# HBM capacities are taken as GiB: v5e's "16 GB" is 16 GiB (libtpu's
# compiler refuses a v5e step beyond 15.75 GiB of HBM, the rest reserved).
CHIPS = {
    "v4": Chip(32 * GiB, 275e12, 1200e9, 540e9, 3, (2, 2, 1), "megacore"),
    "v5e": Chip(16 * GiB, 197e12, 819e9, 400e9, 2, (2, 4, 1), "default"),
    "v5p": Chip(95 * GiB, 459e12, 2765e9, 1200e9, 3, (2, 2, 1), "default"),
    "v6e": Chip(32 * GiB, 918e12, 1638e9, 800e9, 2, (2, 4, 1), "default"),
}
TOPOLOGY_EXAMPLES = "v4:2x2x1, v5e:2x2, v5e:4x4, v5e:16x16, v5p:2x2x2, v6e:8x8"


def topology_devices(name: str, num_slices: int = 1) -> list:
  """The devices of `num_slices` TPU slices, e.g. "v5e:4x4", as libtpu describes them."""
  generation, _, shape = name.partition(":")
  dims = shape.split("x")
  if generation not in CHIPS or not all(d.isdigit() and int(d) > 0 for d in dims):
    raise ValueError(
        f"--topology={name!r}: {did_you_mean(generation, CHIPS)}write"
        f" GENERATION:SHAPE with a generation in {sorted(CHIPS)}, e.g."
        f" {TOPOLOGY_EXAMPLES}.")
  chip = CHIPS[generation]
  if len(dims) != chip.dims:
    raise ValueError(f"--topology={name!r}: {generation} slices are"
                     f" {chip.dims}-D, e.g. {TOPOLOGY_EXAMPLES}.")
  if importlib.util.find_spec("libtpu") is None:
    raise RuntimeError(
        "--topology compiles through libtpu, which is not installed: run"
        " pip install -e '.[tpu]' (it brings the libtpu matching jax).")
  # libtpu takes /tmp/libtpu_lockfile for the machine's TPU, and a second
  # process loading it aborts ("Internal error when accessing libtpu
  # multi-process lockfile"); compiling touches no TPU, so skip the lock:
  # pytest workers, a second inspect, a run that loaded libtpu get along.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  dims = [int(d) for d in dims] + [1] * (3 - len(dims))
  bounds = tuple(min(b, d) for b, d in zip(chip.host_bounds, dims))
  topology = topologies.get_topology_desc(
      platform="tpu", topology_name=name, chip_config_name=chip.chip_config,
      chips_per_host_bounds=bounds, num_slices=num_slices)
  return list(topology.devices)


def placed(config, devices):
  """TPU devices in the mesh's order, neighbours on the innermost axes (as
  jax.make_mesh places a real slice)."""
  shape = tuple(mesh_lib.mesh_shape(config.mesh.to_dict(), len(devices)).values())
  try:
    return list(mesh_utils.create_device_mesh(
        shape, devices, allow_split_physical_axes=True).flat)
  except (ValueError, NotImplementedError, AssertionError):
    return devices
