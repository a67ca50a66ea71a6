"""deeplearn: lectures' deep learning as runnable JAX experiments.

Importing it (every entry point does, before jax) keeps jax off an absent TPU:
with libtpu installed (the `tpu` extra) and no accelerator in the machine,
jax's first use would still try the TPU backend, and libtpu then logs errors
about TPU_* variables and takes /tmp/libtpu_lockfile. Unless the user chose
(JAX_PLATFORMS, jax.config's jax_platforms, JAX_FORCE_TPU_INIT), jax then
uses the CPU. Compiling ahead of time for a TPU slice (inspect --topology)
loads libtpu by itself and is unaffected.
"""

import glob
import os
import sys


def _accelerator_attached() -> bool:
  """A TPU or GPU in the machine, by jax's own tests (jax._src.hardware_utils):
  any Google PCI device (TPUs are; jax counts chips the same way), TPU device
  files, NVIDIA or AMD GPU device files."""
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    with open(vendor) as f:
      if f.read().strip() == "0x1ae0":
        return True
  return any(glob.glob(p) for p in ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia0",
                                    "/dev/nvidiactl", "/dev/dxg", "/dev/kfd"))


def _skip_absent_tpu() -> None:
  chosen = os.environ.get("JAX_PLATFORMS") or "JAX_FORCE_TPU_INIT" in os.environ
  if "jax" in sys.modules:  # imported first: a jax.config.update counts as a choice
    chosen = chosen or sys.modules["jax"].config.jax_platforms
  if chosen or _accelerator_attached():
    return
  os.environ["JAX_PLATFORMS"] = "cpu"  # read when jax is imported
  if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_platforms", "cpu")


_skip_absent_tpu()
