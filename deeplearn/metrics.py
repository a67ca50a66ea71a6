"""Where metrics go: TensorBoard events and metrics.jsonl in the workdir.

Only process 0 writes. `metrics.jsonl` holds one JSON record per line,
`{"step": ..., "split": "train" | "eval", "time": <unix s>, <name>: <value>, ...}`,
easy to read back with pandas or a few lines of Python (see `read_records`).
Records are appended, never rewritten in place: a resumed run that must drop
records past its checkpoint writes the kept ones to a new file and renames
it over the old (deeplearn.files.write_atomic), so no failure loses the
history. TensorBoard's events are flushed at every write, so a run that
dies (a full disk, a SIGKILL) keeps what it logged.
"""

import json
import os
import time

from absl import logging
from tensorboardX import SummaryWriter

from deeplearn import files


class MetricWriter:

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
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

  def truncate_after(self, step: int) -> list[str]:
    """Drops records past `step` (a resumed run writes them again) and
    unreadable lines; returns a line per problem repaired. The file is
    rewritten only when something is dropped, and then atomically."""
    if not self.enabled or not os.path.exists(self.path):
      return []
    problems = []
    kept = read_records(self.path, problems=problems)
    later = [r for r in kept if r["step"] > step]
    if not problems and not later:
      return []
    files.write_atomic(self.path, "".join(
        json.dumps(r) + "\n" for r in kept if r["step"] <= step))
    return [f"{p}; dropped it" for p in problems]

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


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
