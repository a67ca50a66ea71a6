"""Where metrics go: TensorBoard events and metrics.jsonl in the workdir.

Only process 0 writes. `metrics.jsonl` holds one JSON record per line,
`{"step": ..., "split": "train" | "eval", "time": <unix s>, <name>: <value>, ...}`,
easy to read back with pandas or a few lines of Python (see `read_records`).
"""

import json
import os
import time

from tensorboardX import SummaryWriter


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

  def truncate_after(self, step: int) -> None:
    """Drops records past `step`: a resumed run rewrites what was lost."""
    if not self.enabled or not os.path.exists(self.path):
      return
    kept = [r for r in read_records(self.path) if r["step"] <= step]
    with open(self.path, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_records(path: str, split: str | None = None) -> list[dict]:
  """The file's records (of `split`, if given). A last line without its newline is one
  still being written, or cut by a killed process: it is left out (a resumed run's
  `truncate_after` then drops it from the file)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.readlines()
  if lines and not lines[-1].endswith("\n"):
    lines.pop()
  records = [json.loads(line) for line in lines if line.strip()]
  return [r for r in records if split is None or r["split"] == split]
