"""Dates: human-written dates in many styles -> ISO 8601, a generated translation task.

"Tuesday, May 3rd 1998", "03/05/98", "1998.05.03", ... -> "1998-05-03". The task has real
structure for attention to find: the output's year, month and day come from different places
of the input depending on the style, month names must be looked up, two-digit years need a
century (00-49 -> 20xx, 50-99 -> 19xx), and nothing is copied in place. Numeric day-month
orders are European (day first) throughout, so every source has exactly one reading.

Examples are drawn by a numpy Generator with a fixed seed: 50,000 train and 2,000 test pairs,
dates uniform in 1950-01-01 .. 2049-12-31, styles uniform over FORMATS. The split is by date:
every 20th day (by ordinal) belongs to the test split only, so a test date never appears in
training in any style. Features: `source` and `target` strings; `metadata["vocab"]` is every
char of both plus PAD, BOS, EOS (sorted, PAD first: id 0), and `source_len` / `target_len`
the padded lengths the pipeline uses (target_len counts the EOS).
"""

import datetime
import re

import numpy as np
import tensorflow_datasets as tfds

from deeplearn.data.builders.base import LocalBuilder

PAD, BOS, EOS = "\x00", "\x02", "\x03"  # the seq2seq convention: id = index in vocab
SOURCE_LEN, TARGET_LEN = 32, 11
SIZES = {"train": 50_000, "test": 2_000}
TEST_EVERY = 20  # days with ordinal % 20 == 0 are test dates
FIRST, LAST = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)
SEED = 1998

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# Fields: {d} day, {dd} two-digit day, {dth} ordinal day, {m} / {mm} month number,
# {Month} / {Mon} / {MONTH} / {month} name, {yy} / {yyyy} year, {Weekday} / {Wkd}.
FORMATS = [
    "{d} {Month} {yyyy}",          # 3 May 1998
    "{Month} {d}, {yyyy}",         # May 3, 1998
    "{dd}/{mm}/{yy}",              # 03/05/98
    "{Weekday}, {Month} {dth} {yyyy}",  # Tuesday, May 3rd 1998
    "{yyyy}.{mm}.{dd}",            # 1998.05.03
    "{dth} of {Month}, {yyyy}",    # 3rd of May, 1998
    "{dd}-{Mon}-{yyyy}",           # 03-May-1998
    "{Wkd} {d} {Mon} {yy}",        # Tue 3 May 98
    "{d}.{m}.{yyyy}",              # 3.5.1998
    "{MONTH} {d} {yyyy}",          # MAY 3 1998
    "{month} {dth}, '{yy}",        # may 3rd, '98
    "{yyyy}{mm}{dd}",              # 19980503
]


def ordinal(day: int) -> str:
  suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
  return f"{day}{suffix}"


def render(date: datetime.date, fmt: str) -> str:
  """`date` written in style `fmt` (one of FORMATS)."""
  month = MONTHS[date.month - 1]
  weekday = WEEKDAYS[date.weekday()]
  return fmt.format(d=date.day, dd=f"{date.day:02d}", dth=ordinal(date.day), m=date.month,
                    mm=f"{date.month:02d}", Month=month, Mon=month[:3], MONTH=month.upper(),
                    month=month.lower(), yy=f"{date.year % 100:02d}", yyyy=date.year,
                    Weekday=weekday, Wkd=weekday[:3])


def generate(split: str, seed: int = SEED) -> list[tuple[str, str]]:
  """The split's (source, ISO target) pairs, a function of the seed alone."""
  rng = np.random.default_rng([seed, list(SIZES).index(split)])
  days = np.arange(FIRST.toordinal(), LAST.toordinal() + 1)
  days = days[(days % TEST_EVERY == 0) == (split == "test")]
  picks = rng.choice(days, SIZES[split])
  styles = rng.integers(len(FORMATS), size=SIZES[split])
  dates = [datetime.date.fromordinal(int(day)) for day in picks]
  return [(render(date, FORMATS[s]), date.isoformat()) for date, s in zip(dates, styles)]


def vocabulary() -> str:
  """Every char any style can produce, plus PAD, BOS, EOS: sorted, PAD first."""
  chars = set("0123456789-., /'") | {PAD, BOS, EOS}
  for name in MONTHS + WEEKDAYS:
    chars |= set(name) | set(name.upper()) | set(name.lower())
  chars |= set("ofstndrh")
  return "".join(sorted(chars))


def parse(source: str) -> datetime.date:
  """Reads a source back (any of FORMATS), checking the weekday where one is written.

  Independent of `render`: a regular expression per style. Raises ValueError when no style
  matches or the fields contradict each other.
  """
  names = {"d": r"(?P<d>\d{1,2})", "dd": r"(?P<d>\d{2})", "dth": r"(?P<d>\d{1,2})(?:st|nd|rd|th)",
           "m": r"(?P<m>\d{1,2})", "mm": r"(?P<m>\d{2})", "Month": r"(?P<name>[A-Z][a-z]+)",
           "Mon": r"(?P<name>[A-Z][a-z]{2})", "MONTH": r"(?P<name>[A-Z]+)",
           "month": r"(?P<name>[a-z]+)", "yy": r"(?P<yy>\d{2})", "yyyy": r"(?P<y>\d{4})",
           "Weekday": r"(?P<wd>[A-Z][a-z]+)", "Wkd": r"(?P<wd>[A-Z][a-z]{2})"}
  for fmt in FORMATS:
    pattern = re.sub(r"\{(\w+)\}", lambda f: names[f.group(1)], re.escape(fmt).replace(
        r"\{", "{").replace(r"\}", "}"))
    match = re.fullmatch(pattern, source)
    if not match:
      continue
    g = match.groupdict()
    year = int(g["y"]) if g.get("y") else (2000 if int(g["yy"]) < 50 else 1900) + int(g["yy"])
    if g.get("name"):
      month = [m.lower()[:len(g["name"])] for m in MONTHS].index(g["name"].lower())
      month += 1
    else:
      month = int(g["m"])
    date = datetime.date(year, month, int(g["d"]))
    if g.get("wd") and not WEEKDAYS[date.weekday()].startswith(g["wd"]):
      raise ValueError(f"{source!r}: {date} is a {WEEKDAYS[date.weekday()]}")
    return date
  raise ValueError(f"{source!r} matches none of the date styles")


class Dates(LocalBuilder, skip_registration=True):
  """Human-written dates -> ISO dates: `source` and `target` text; vocab in metadata."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({"source": tfds.features.Text(),
                                             "target": tfds.features.Text()}),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # generated
    self.info.metadata.update(vocab=vocabulary(), source_len=SOURCE_LEN, target_len=TARGET_LEN)
    return {split: self._generate_examples(split) for split in SIZES}

  def _generate_examples(self, split):
    for i, (source, target) in enumerate(generate(split)):
      yield i, {"source": source, "target": target}
