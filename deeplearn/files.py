"""The loop's files: each written whole or not at all, one run per workdir.

`write_atomic` is how every file the loop rewrites (config.json,
summary.json, a trimmed metrics.jsonl, a scheme's vectors) reaches the disk:
a temporary file beside it, fsynced, renamed over it, the folder fsynced. A
reader, a killed writer or a full disk then leaves the old file or the new
one, never a part; appends (metrics.jsonl's records) only ever add.

`WorkdirLock` keeps a second run out of a workdir in use: two runs writing
one workdir would interleave their metrics and checkpoints into a history
neither of them had. It is an OS file lock (flock), so a run killed with
SIGKILL cannot leave it held, and one per process index, so the processes
of one multi-process run do not exclude each other.
"""

import contextlib
import errno as errno_lib
import fcntl
import json
import os
import shutil
import socket
import sys
import time


class WriteError(OSError):
  """A file could not be written; the message names it and the cause."""


def write_atomic(path: str, text: str | bytes) -> None:
  """Replaces `path` by `text` atomically (see the module docstring).

  On failure the temporary file is removed, `path` keeps its old contents
  and WriteError names the file and the cause (a full disk, say)."""
  folder = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(folder,
                     f".{os.path.basename(path)}.tmp-{os.getpid()}")
  data = text.encode() if isinstance(text, str) else text
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise WriteError(
        e.errno, f"Could not write {path}: {e.strerror or e}"
        + (" (the disk is full)" if e.errno == errno_lib.ENOSPC else "")
        + "; the file keeps its previous contents, if it had any.") from e
  sync_folder(folder)


def sync_folder(folder: str) -> None:
  """fsyncs a folder, so that a rename in it survives a power cut."""
  with contextlib.suppress(OSError):  # some filesystems refuse; rename held
    fd = os.open(folder, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


class WorkdirBusyError(RuntimeError):
  """Another run holds the workdir."""


# Locks this process holds: {lock path: (fd, depth)}, so that the entry point
# and the loop below it may both take it.
_HELD: dict[str, list] = {}


def lock_path(workdir: str, process_index: int) -> str:
  return os.path.join(workdir, f".lock.process_{process_index}")


@contextlib.contextmanager
def workdir_lock(workdir: str, process_index: int = 0):
  """Holds the workdir for this run's life; raises WorkdirBusyError at once,
  naming the holder's pid, host and command, if another run holds it.

  Creates the workdir if needed; if what follows fails and the workdir held
  nothing but its lock files, it is removed again, so a run that fails its
  checks leaves no workdir behind.
  """
  workdir = os.path.abspath(workdir)
  path = lock_path(workdir, process_index)
  if path in _HELD:  # re-entered in this process
    _HELD[path][1] += 1
    try:
      yield
    finally:
      _HELD[path][1] -= 1
    return
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = _holder(fd)
    os.close(fd)
    if e.errno not in (errno_lib.EWOULDBLOCK, errno_lib.EACCES):
      raise
    raise WorkdirBusyError(
        f"The workdir {workdir} is in use by another run ({holder}). Two runs"
        " in one workdir would mix their checkpoints and metrics: wait for"
        " it to finish or stop it (a stopped run resumes), or use another"
        " --workdir.") from None
  with contextlib.suppress(OSError):  # a full disk: held, holder unsaid
    os.ftruncate(fd, 0)  # the lock file's text only says who holds it
    os.pwrite(fd, json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(sys.argv)}).encode(), 0)
  _HELD[path] = [fd, 1]
  ok = False
  try:
    yield
    ok = True
  finally:
    del _HELD[path]
    os.close(fd)  # releases the lock
    if not ok and created and all(
        name.startswith(".lock.process_") for name in os.listdir(workdir)):
      shutil.rmtree(workdir, ignore_errors=True)


def _holder(fd: int) -> str:
  try:
    info = json.loads(os.pread(fd, 4096, 0))
    return (f"pid {info['pid']} on host {info['host']}, since {info['since']}:"
            f" {info['command']}")
  except (OSError, ValueError, KeyError, TypeError):
    return "its pid is not recorded yet"
