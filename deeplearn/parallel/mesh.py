"""Device mesh from `config.mesh`, validated against the devices present.

`config.mesh` maps axis names to sizes, one of which may be -1 ("the rest"):
`mesh.data = -1` is plain data parallelism on any number of devices. Every
mesh has all five axes (size 1 where the config leaves one out), so one table
of sharding rules fits every mesh. Axes are ordered `data, fsdp, stage, expert, model` so that the innermost axis,
`model`, lands on neighbouring devices (the fastest links, within one host).

Multi-slice (several TPU slices joined by the data-centre network, DCN): the
slices split the outermost axis that divides by their number, `data` before
`fsdp`, so the slow DCN links carry the data-parallel gradient reduction and
every other axis stays inside a slice (ICI), as MaxText's `dcn_*` settings do.
"""

import math
from collections.abc import Mapping, Sequence

import jax
from jax.experimental import mesh_utils
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
          f" a divisor of {num_devices}{cpu_hint(fixed)}.")
    sizes[free[0]] = num_devices // fixed
  elif fixed != num_devices:
    # jax.make_mesh would silently use a subset of the devices: refuse.
    raise ValueError(
        f"config.mesh {sizes} uses {fixed} devices but {num_devices} are"
        f" present; make the sizes multiply to {num_devices}, or set one axis"
        " to -1 to take the rest (e.g. --config.mesh.data=-1)"
        f"{cpu_hint(fixed) if fixed > num_devices else ''}.")
  if not sizes:
    sizes = {"data": num_devices}
  return {name: sizes.get(name, 1) for name in AXES}


def cpu_hint(devices: int) -> str:
  """How to get `devices` on a CPU, for the errors of a mesh too big for it."""
  if jax.default_backend() != "cpu":
    return ""
  return ("; on a CPU, simulate them: XLA_FLAGS=--xla_force_host_platform_device_count="
          f"{devices} (set before the command)")


# Axes the slices of a multi-slice run may split, in order of preference.
DCN_AXES = ("data", "fsdp")


def dcn_shape(sizes: Mapping[str, int], num_slices: int) -> dict[str, int]:
  """How many slices each axis spans: `num_slices` on the first of DCN_AXES
  whose size it divides, 1 elsewhere."""
  for axis in DCN_AXES:
    if sizes[axis] % num_slices == 0:
      return {name: num_slices if name == axis else 1 for name in sizes}
  raise ValueError(
      f"config.mesh {dict(sizes)} on {num_slices} slices: the slices split the"
      f" `data` or `fsdp` axis (only data-parallel traffic should cross the"
      f" slow links between slices), so one of them must be a multiple of"
      f" {num_slices}; e.g. --config.mesh.data={num_slices * sizes['data']}"
      " with the other axes smaller.")


def make_mesh(mesh_cfg: Mapping[str, int],
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the mesh; axes are Auto-typed so jit derives layouts (GSPMD)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(mesh_cfg, len(devices))
  names = tuple(sizes)
  shape = tuple(sizes.values())
  axis_types = (jax.sharding.AxisType.Auto,) * len(names)
  num_slices = len({getattr(d, "slice_index", 0) for d in devices})
  if num_slices > 1:
    dcn = dcn_shape(sizes, num_slices)
    ici = tuple(sizes[n] // dcn[n] for n in names)
    grid = mesh_utils.create_hybrid_device_mesh(
        ici, tuple(dcn.values()), devices, allow_split_physical_axes=True)
    return Mesh(grid, names, axis_types=axis_types)
  # Topology-aware placement (TPU ICI rings, multi-host ordering); on CPU a
  # plain reshape. Also for TPU topology descriptions (deeplearn.inspect).
  return jax.make_mesh(shape, names, axis_types=axis_types, devices=devices)


def describe(mesh: Mesh) -> str:
  """`data=8` or `data=2 model=4`: the axes that split something."""
  used = {n: s for n, s in mesh.shape.items() if s > 1} or {"data": 1}
  return " ".join(f"{name}={size}" for name, size in used.items())
