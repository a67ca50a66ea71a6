"""The numbers `inspect_step` reads, a roofline estimate of the step time
on a TPU chip, and the table printed for the terminal."""

import dataclasses

from deeplearn.hlo import KINDS
from deeplearn.inspect.topology import GiB, Chip


@dataclasses.dataclass
class Report:
  """The numbers `inspect_step` reads; every byte count is per device."""
  config: str
  target: str  # "8 x cpu" or "v5e:4x4 (16 x TPU v5 lite)"
  mesh: dict
  num_params: int
  param_bytes: int  # all parameters, unsharded
  param_bytes_per_device: int
  optimizer_bytes_per_device: int
  other_state_bytes_per_device: int
  memory: dict  # XLA memory analysis: argument, output, alias, temp, code
  hbm_bytes_needed: int
  flops: float  # per device per step
  matmul_flops: float  # of which dots and convolutions, read from the HLO
  bytes_accessed: float
  collectives: list
  unknown_trip_counts: int  # loops whose collectives were counted once
  theory: dict  # kind -> bytes per step: gradients and parameters
  theory_tp_activations: int  # tensor-parallel activation all-reduces
  lower_s: float
  compile_s: float
  compile_error: str = ""  # the TPU compiler's, when the step cannot fit
  chip: dict | None = None
  fits: bool | None = None
  roofline: dict | None = None

  def measured(self) -> dict:
    """kind -> bytes per step of non-scalar arrays (not the metrics)."""
    out = {kind: 0 for kind in KINDS}
    for c in self.collectives:
      out[c.kind] += (c.bytes - c.scalar_bytes) * c.count
    return out

  def metric_bytes(self) -> int:
    return sum(c.scalar_bytes * c.count for c in self.collectives)

  def ratio(self) -> float | None:
    """Measured non-scalar collective bytes over the theoretical minimum."""
    theory = sum(self.theory.values()) + self.theory_tp_activations
    return sum(self.measured().values()) / theory if theory else None

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    for c, d in zip(self.collectives, out["collectives"]):
      d["bytes_per_step"] = c.bytes_per_step
      d["wire_bytes_per_step"] = c.wire_bytes_per_step
    out.update(measured=self.measured(), metric_bytes=self.metric_bytes(),
               ratio=self.ratio())
    return out


def roofline(report: Report, chip: Chip) -> dict:
  """A lower bound on the step time from the chip's peak rates.

  Each resource alone: FLOPs at the peak bf16 rate (float32 matmuls run
  several times slower), XLA's bytes accessed at the HBM bandwidth, and the
  bytes each chip sends in collectives (ring algorithms) at its whole ICI
  bandwidth. The step takes at least the largest of the three (perfect
  overlap) and at most about their sum (none).
  """
  times = {
      "compute_s": report.flops / chip.peak_flops,
      "hbm_s": report.bytes_accessed / chip.hbm_bandwidth,
      "ici_s": sum(c.wire_bytes_per_step for c in report.collectives)
               / chip.ici_bandwidth,
  }
  bound = max(times, key=times.get)
  return {**times, "step_s": times[bound], "no_overlap_s": sum(times.values()),
          "bound": bound.removesuffix("_s")}


def _size(n: float) -> str:
  for unit, scale in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
    if abs(n) >= scale:
      return f"{n / scale:.3g} {unit}"
  return f"{n:.0f} B"


def _time(s: float) -> str:
  return f"{s * 1e3:.3g} ms" if s >= 1e-3 else f"{s * 1e6:.3g} us"


def fits_line(report: Report) -> str:
  need, has = report.hbm_bytes_needed / GiB, report.chip["hbm_bytes"] / GiB
  if report.fits:
    return f"fits: {need:.2f} of {has:.0f} GiB ({need / has:.0%})"
  return (f"does NOT fit: needs {need:.2f} GiB, has {has:.0f} GiB"
          f" ({need - has:.2f} GiB over)")


def format_report(report: Report, top: int = 12) -> str:
  """The report as a table for the terminal."""
  mem = report.memory
  mesh = " ".join(f"{k}={v}" for k, v in report.mesh.items())
  lines = [
      f"{report.config} on {report.target}, mesh {mesh}",
      (f"the compiler refused the step after {report.compile_s:.1f} s:"
       f" {report.compile_error}" if report.compile_error else
       f"compiled ahead of time in {report.compile_s:.1f} s (lowered in"
       f" {report.lower_s:.1f} s)"),
      "",
      "memory per device",
      f"  parameters         {_size(report.param_bytes_per_device):>10}"
      f"   ({report.num_params:,} params, {_size(report.param_bytes)} unsharded)",
      f"  optimizer state    {_size(report.optimizer_bytes_per_device):>10}",
      f"  other state        {_size(report.other_state_bytes_per_device):>10}"
      "   (batch statistics, averaged weights, step, rng)",
      f"  arguments          {_size(mem['argument']):>10}   (state and batch)",
      f"  outputs            {_size(mem['output']):>10}"
      f"   ({_size(mem['alias'])} of them in place of the arguments)",
      f"  activations (temp) {_size(mem['temp']):>10}"
      "   (XLA temporaries: saved activations, gradients, workspace)",
      f"  program            {_size(mem['generated_code']):>10}",
      f"  needed             {_size(report.hbm_bytes_needed):>10}"
      + (f"   {fits_line(report)}" if report.chip else ""),
  ]
  if report.compile_error:  # no program: nothing more to read
    return "\n".join(lines)
  lines += [
      "",
      "per device per step (XLA cost analysis, loop bodies times their trip"
      " count)",
      f"  FLOPs              {report.flops:>10.3g}   ({report.matmul_flops:.3g}"
      " in matmuls and convolutions)",
      f"  bytes accessed     {_size(report.bytes_accessed):>10}",
      "",
      f"collectives per step per device ({len(report.collectives)} in the"
      " compiled HLO)",
      "  kind                count     measured       theory   ratio",
  ]
  measured = report.measured()
  tp = report.theory_tp_activations
  for kind in KINDS:
    count = sum(c.count for c in report.collectives if c.kind == kind)
    theory = report.theory.get(kind, 0) + (tp if kind == "all-reduce" else 0)
    if not (count or theory):
      continue
    ratio = f"{measured[kind] / theory:6.2f}" if theory else "     -"
    lines.append(f"  {kind:<18} {count:>6} {_size(measured[kind]):>12}"
                 f" {_size(theory) if theory else '-':>12}  {ratio}")
  if report.theory.get("reduce-scatter"):
    # XLA:CPU reduces FSDP gradients with all-reduces: compare the sum.
    reduced = measured["all-reduce"] + measured["reduce-scatter"]
    theory = report.theory["all-reduce"] + report.theory["reduce-scatter"] + tp
    lines.append(f"  {'all-reduce+reduce-scatter':<25} {_size(reduced):>12}"
                 f" {_size(theory):>12}  {reduced / theory:6.2f}")
  if tp:
    lines.append(f"  (all-reduce theory: {_size(tp)} of it tensor-parallel"
                 " activations, 2 forward + 2 backward per block)")
  ratio = report.ratio()
  what = "gradient/parameter" + (" and activation" if tp else "")
  lines.append(
      f"  {what} collectives vs theory: "
      + (f"{ratio:.2f}x" if ratio is not None else "no theory (one device"
         " per batch shard and no model split)")
      + f"; metrics (scalars) apart: {_size(report.metric_bytes())}")
  if report.unknown_trip_counts:
    lines.append(f"  ({report.unknown_trip_counts} loops of unknown trip count:"
                 " their collectives are counted once)")
  if report.collectives:
    lines.append("  largest:")
    for c in report.collectives[:top]:
      shapes = ", ".join(c.shapes[:2]) + (", ..." if len(c.shapes) > 2 else "")
      where = "/".join(c.op_name.split("/")[-2:])[:40]
      lines.append(f"    {_size(c.bytes_per_step):>10}  {c.count:>3} x"
                   f" {c.kind:<18} {shapes:<28} over {c.group_size:<4} {where}")
    if len(report.collectives) > top:
      rest = report.collectives[top:]
      lines.append(f"    ... {len(rest)} more,"
                   f" {_size(sum(c.bytes_per_step for c in rest))} together")
  if report.roofline:
    r, chip = report.roofline, report.chip
    lines += [
        "",
        f"roofline ({chip['name']}: {chip['peak_flops'] / 1e12:.0f} TFLOP/s"
        f" bf16, {chip['hbm_bandwidth'] / 1e9:.0f} GB/s HBM,"
        f" {chip['ici_bandwidth'] / 1e9:.0f} GB/s ICI per chip)",
        f"  compute {_time(r['compute_s'])}, HBM {_time(r['hbm_s'])},"
        f" ICI {_time(r['ici_s'])}",
        f"  step >= {_time(r['step_s'])} ({r['bound']}-bound; no overlap:"
        f" {_time(r['no_overlap_s'])})",
    ]
  return "\n".join(lines)
