"""Preemption: SIGTERM means "save at the next step boundary and exit 0".

TPU VMs and spot instances announce an eviction with SIGTERM. In a
multi-process run every process must stop at the same step, or their
checkpoints would disagree: jax's preemption service (part of the
`jax.distributed` client) propagates the notice and picks the step, via
`multihost_utils.reached_preemption_sync_point`. A single process has no
such client, so it catches the signal itself.
"""

import signal

from absl import logging
import jax
from jax.experimental import multihost_utils


class Watcher:
  """`reached(step)` is True at the step where the run should save and stop."""

  def __init__(self):
    self.distributed = jax.process_count() > 1
    self.received = False
    self._previous = None
    if not self.distributed:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
      except ValueError:  # not the main thread: signals cannot be caught here
        logging.warning("SIGTERM is not handled: the run is not in the main"
                        " thread, so preemption will not save a checkpoint.")

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.received = True

  def reached(self, step: int) -> bool:
    if self.distributed:
      # Called at every step on every process (the service requires it).
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
