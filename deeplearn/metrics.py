"""Where metrics go: TensorBoard events and metrics.jsonl in the workdir.

Only process 0 writes. `metrics.jsonl` holds one JSON record per line,
`{"step": ..., "split": "train" | "eval", "time": <unix s>, <name>: <value>, ...}`,
easy to read back with pandas or a few lines of Python (see `read_records`).
Records are appended, never rewritten in place: a resumed run that must drop
records past its checkpoint writes the kept ones to a new file and renames
it over the old (deeplearn.files.write_atomic), so no failure loses the
history. TensorBoard's events are flushed at every write, so a run that
dies (a full disk, a SIGKILL) keeps what it logged. A scheme's pictures
(sample grids, reconstructions) go to WORKDIR/images/<name>/<step>.png and to
TensorBoard.
"""

import io
import json
import os
import sys
import time

from absl import logging
import numpy as np
import PIL.Image

from deeplearn import files


def _import_tensorboardx():
  """tensorboardX, imported without torch.

  tensorboardX imports torch whenever it is installed, only to accept torch
  tensors, which deeplearn never passes; on a machine with torch that is 2.6 s
  of every run's startup (2026-12-03). torch is hidden while tensorboardX
  loads and is importable as usual afterwards.
  """
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None  # `import torch` raises ImportError
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    if hide:
      del sys.modules["torch"]
  return tensorboardX.SummaryWriter


SummaryWriter = _import_tensorboardx()


class MetricWriter:

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.workdir = workdir
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = SummaryWriter(logdir=workdir) if enabled else None

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in metrics.items()}
    with open(self.path, "a") as f:
      # "time": Unix seconds when written (time to a target metric, as TensorBoard's
      # wall time)
      f.write(json.dumps({"step": step, "split": split, "time": round(time.time(), 3),
                          **values}) + "\n")
    for name, value in values.items():
      self._tb.add_scalar(f"{split}/{name}", value, step)
    self._tb.flush()

  def images(self, step: int, images: dict) -> None:
    """Each {name: uint8 [H, W] or [H, W, 3]} as WORKDIR/images/<name>/
    <step>.png (atomically) and as a TensorBoard image."""
    if not self.enabled:
      return
    for name, image in images.items():
      image = np.asarray(image)
      if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"image {name!r}: {image.dtype} {image.shape}; images"
                         " are uint8 [H, W] or [H, W, 3]")
      folder = os.path.join(self.workdir, "images", name)
      os.makedirs(folder, exist_ok=True)
      png = io.BytesIO()
      PIL.Image.fromarray(image).save(png, format="PNG")
      files.write_atomic(os.path.join(folder, f"{step:08d}.png"), png.getvalue())
      self._tb.add_image(name, image, step,
                         dataformats="HW" if image.ndim == 2 else "HWC")
    self._tb.flush()

  def truncate_after(self, step: int) -> list[str]:
    """Drops records past `step` (a resumed run writes them again), a last
    line cut mid-write and unreadable lines; returns a line per unreadable
    line dropped. The file is rewritten only when something is dropped, and
    then atomically: the next append starts on a line of its own."""
    if not self.enabled or not os.path.exists(self.path):
      return []
    problems = []
    kept = read_records(self.path, problems=problems)
    later = [r for r in kept if r["step"] > step]
    if not problems and not later and not _cut_last_line(self.path):
      return []
    files.write_atomic(self.path, "".join(
        json.dumps(r) + "\n" for r in kept if r["step"] <= step))
    return [f"{p}; dropped it" for p in problems]

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _cut_last_line(path: str) -> bool:
  """True if the file's last line lacks its newline (a killed writer's)."""
  with open(path, "rb") as f:
    if f.seek(0, os.SEEK_END) == 0:
      return False
    f.seek(-1, os.SEEK_END)
    return f.read(1) != b"\n"


def read_records(path: str, split: str | None = None,
                 problems: list[str] | None = None) -> list[dict]:
  """The file's records (of `split`, if given).

  A last line without its newline is one still being written, or cut by a
  killed process: it is left out silently. Any other line that is not a
  record (a damaged file) is left out with a warning naming the file and
  line, also appended to `problems` when given."""
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf8", errors="replace") as f:
    lines = f.readlines()
  if lines and not lines[-1].endswith("\n"):
    lines.pop()
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        raise ValueError("not a record with an integer step")
    except ValueError as e:
      problem = f"{path} line {number} is not a metrics record ({e})"
      logging.warning("%s; skipped", problem)
      if problems is not None:
        problems.append(problem)
      continue
    records.append(record)
  return [r for r in records if split is None or r.get("split") == split]
