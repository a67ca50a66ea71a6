"""What the command-line entry points share: a user's error as one message.

A misspelled key, a bad value, a busy workdir or a full disk is the user's
to fix, not a bug to debug: it prints `error: <message>` (the message names
the key and the fix) and exits 2, with no traceback. An error raised inside
a library (jax, flax, orbax), or any other exception, keeps its traceback;
DEEPLEARN_TRACEBACK=1 shows it for user errors too.

  cli.run(main)   # instead of absl.app.run(main)
"""

import os
import re
import sys
import sysconfig

from absl import app, flags

from deeplearn import checkpoint, files

USAGE_ERROR = 2  # the shell's convention for a command used wrongly
USER_ERRORS = (ValueError, FileNotFoundError, files.WorkdirBusyError,
               files.WriteError, checkpoint.CorruptCheckpointError)
_LIBRARIES = tuple(sysconfig.get_paths()[k] for k in ("stdlib", "purelib",
                                                       "platlib"))


def traceback_wanted() -> bool:
  return os.environ.get("DEEPLEARN_TRACEBACK", "") not in ("", "0")


def fail(message: str) -> None:
  """Prints `error: message` to stderr and exits 2."""
  sys.stdout.flush()
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(USAGE_ERROR)


def raised_by_us(error: BaseException) -> bool:
  """True if the innermost frame is outside the standard library and the
  installed packages: deeplearn itself or an experiment file, whose checks
  phrase their messages for the user."""
  tb, last = error.__traceback__, None
  while tb is not None:
    last, tb = tb.tb_frame.f_code.co_filename, tb.tb_next
  return last is not None and not last.startswith(_LIBRARIES)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag (or --config: a missing key, an
  experiment file that raises) as one message and exit 2, not absl's
  "FATAL Flags parsing error" and, for an experiment file, its traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
    if "Traceback (most recent call last)" in message and not traceback_wanted():
      # ml_collections puts the experiment file's traceback in the text:
      # keep the flag and the exception's own line.
      lines = [l for l in message.splitlines() if l.strip()]
      message = f"{lines[0].rstrip(':')} {lines[-1]}"
    # "flag --config=x.py: --config.foo: ..." says the flag twice.
    fail(re.sub(r"^flag --config=\S+: (--config\.)", r"\1", message))


def run(main) -> None:
  """absl.app.run(main), with user errors as one message and exit 2."""

  def checked(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      if traceback_wanted() or not raised_by_us(e):
        raise
      fail(str(e))

  app.run(checked, flags_parser=parse_flags)
