"""Stopping cleanly: SIGTERM and the first Ctrl-C save at the next step.

TPU VMs and spot instances announce an eviction with SIGTERM; a person at
the terminal presses Ctrl-C (SIGINT). Either way the run finishes the
current step, saves a checkpoint and exits with a line saying so; a second
Ctrl-C aborts at once, without saving.

In a multi-process run every process must stop at the same step, or their
checkpoints would disagree: jax's preemption service (part of the
`jax.distributed` client) propagates the notice and picks the step, via
`multihost_utils.reached_preemption_sync_point`. It listens for SIGTERM, so
a Ctrl-C there is passed on as a SIGTERM to this process. A single process
has no such service, so it catches the signals itself.
"""

import os
import signal
import sys

from absl import logging
import jax
from jax.experimental import multihost_utils


class Watcher:
  """`reached(step)` is True at the step where the run should save and stop;
  `signal` then names the signal that asked for it ("SIGTERM", "SIGINT")."""

  def __init__(self):
    self.distributed = jax.process_count() > 1
    self.signal = None
    self._previous = {}
    handled = [signal.SIGINT] + ([] if self.distributed else [signal.SIGTERM])
    for signum in handled:
      try:
        self._previous[signum] = signal.signal(signum, self._on_signal)
      except ValueError:  # not the main thread: signals cannot be caught here
        logging.warning("%s is not handled: the run is not in the main thread,"
                        " so it will not save a checkpoint on it.",
                        signal.Signals(signum).name)

  def _on_signal(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.signal == "SIGINT":
      print("\nsecond Ctrl-C: stopping now, without a checkpoint.",
            file=sys.stderr, flush=True)
      raise KeyboardInterrupt
    if signum == signal.SIGINT:
      print("\nCtrl-C: saving a checkpoint after this step, then stopping"
            " (Ctrl-C again to stop at once, without saving).",
            file=sys.stderr, flush=True)
    if self.signal is None or signum == signal.SIGINT:
      self.signal = signal.Signals(signum).name
    if self.distributed and signum == signal.SIGINT:
      os.kill(os.getpid(), signal.SIGTERM)  # for jax's preemption service

  def reached(self, step: int) -> bool:
    if self.distributed:
      # Called at every step on every process (the service requires it).
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal = self.signal or "SIGTERM"
        return True
      return False
    return self.signal is not None

  def stop_line(self) -> str:
    """The first words of the run's last line."""
    return "interrupted (Ctrl-C)" if self.signal == "SIGINT" else "preempted"

  def close(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
