"""Device mesh from `config.mesh`, validated against the devices present.

`config.mesh` maps axis names to sizes, one of which may be -1 ("the rest"):
`mesh.data = -1` is plain data parallelism on any number of devices. Every
mesh has all five axes (size 1 where the config leaves one out), so one table
of sharding rules fits every mesh. Axes are ordered `data, fsdp, stage, expert, model` so that the innermost axis,
`model`, lands on neighbouring devices (the fastest links, within one host).
"""

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from deeplearn.config import did_you_mean

AXES = ("data", "fsdp", "stage", "expert", "model")


def mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Resolves -1 and checks that the axis sizes use every device exactly."""
  unknown = sorted(set(mesh_cfg) - set(AXES))
  if unknown:
    raise ValueError(
        f"config.mesh has unknown axes {unknown}; "
        f"{did_you_mean(unknown[0], AXES)}valid axes are {list(AXES)}.")
  sizes = {name: int(mesh_cfg[name]) for name in AXES if name in mesh_cfg}
  free = [name for name, size in sizes.items() if size == -1]
  if len(free) > 1:
    raise ValueError(
        f"config.mesh: only one axis may be -1 (the rest), got {free}; give"
        " the others sizes.")
  for name, size in sizes.items():
    if size == 0 or size < -1:
      raise ValueError(f"config.mesh.{name}={size}: sizes are positive or -1.")
  fixed = math.prod(size for size in sizes.values() if size != -1)
  if free:
    if num_devices % fixed:
      raise ValueError(
          f"config.mesh {sizes}: the fixed axes use {fixed} devices, which does"
          f" not divide the {num_devices} devices present; make their product"
          f" a divisor of {num_devices}.")
    sizes[free[0]] = num_devices // fixed
  elif fixed != num_devices:
    # jax.make_mesh would silently use a subset of the devices: refuse.
    raise ValueError(
        f"config.mesh {sizes} uses {fixed} devices but {num_devices} are"
        f" present; make the sizes multiply to {num_devices}, or set one axis"
        " to -1 to take the rest (e.g. --config.mesh.data=-1).")
  if not sizes:
    sizes = {"data": num_devices}
  return {name: sizes.get(name, 1) for name in AXES}


def make_mesh(mesh_cfg: Mapping[str, int],
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the mesh; axes are Auto-typed so jit derives layouts (GSPMD)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(mesh_cfg, len(devices))
  names = tuple(sizes)
  shape = tuple(sizes.values())
  axis_types = (jax.sharding.AxisType.Auto,) * len(names)
  if len(devices) == jax.device_count():
    # Topology-aware placement (TPU ICI, multi-host ordering).
    return jax.make_mesh(shape, names, axis_types=axis_types, devices=devices)
  return Mesh(np.asarray(devices).reshape(shape), names, axis_types=axis_types)


def describe(mesh: Mesh) -> str:
  """`data=8` or `data=2 model=4`: the axes that split something."""
  used = {n: s for n, s in mesh.shape.items() if s > 1} or {"data": 1}
  return " ".join(f"{name}={size}" for name, size in used.items())
