"""The train entry point: one experiment config in, a trained, checkpointed run out.

  python -m deeplearn.train --config experiments/mnist1d_cnn.py --workdir runs/cnn

`config.scheme` picks how the run learns (deeplearn/schemes/: supervised by
default, word2vec, or a module:Class of your own); deeplearn/loop.py runs
every scheme alike, with checkpoints, resume, signals, logging and the
summary. Re-running the same command resumes from the newest checkpoint in
the workdir; a finished run reports its summary again. SIGTERM or Ctrl-C
save a checkpoint and stop (Ctrl-C then exits as interrupted, status 130).
A configuration or input error prints one line, `error: ...`, and exits 2
(deeplearn/cli.py; DEEPLEARN_TRACEBACK=1 shows the traceback).
"""

import os
import signal
import sys
import time

from absl import flags, logging
import jax

from deeplearn import cli, config as config_lib, distributed, files, loop, schemes


def train_and_evaluate(config, workdir: str, devices=None) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the summary.

  Everything that can be checked is checked here, before anything compiles:
  the workdir, the loop's settings, then the scheme's own config (built by
  `schemes.get_scheme`). The workdir is held from before the scheme is
  built, so a second run there stops at once."""
  t_start = time.time()
  loop.use_compilation_cache(config.train.get("compilation_cache_dir", ""))
  config_lib.check_workdir(workdir)
  config_lib.validate_loop(config)
  with files.workdir_lock(workdir, jax.process_index()):
    scheme = schemes.get_scheme(config, devices)
    return loop.run(scheme, workdir, t_start)


def exit_as_interrupted() -> None:
  """Ends the process as Ctrl-C would have (status 130), so that a shell
  script running it stops too; the checkpoint is already saved."""
  sys.stdout.flush()
  sys.stderr.flush()
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  os.kill(os.getpid(), signal.SIGINT)


def quiet_library_logs():
  """orbax and grain log every save at INFO; keep them for --verbosity=0."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def main():
  config_flag = config_lib.define_config_flag()
  workdir_flag = flags.DEFINE_string(
      "workdir", None, "Where checkpoints, metrics and summary.json go;"
      " re-use it to resume.")
  coordinator = flags.DEFINE_string(
      "coordinator_address", None, "host:port of process 0 for a multi-process"
      " run started by hand (else $DEEPLEARN_COORDINATOR, a TPU pod or SLURM"
      " environment, or a single process).")
  num_processes = flags.DEFINE_integer("num_processes", None,
                                       "Processes in the run.")
  process_id = flags.DEFINE_integer("process_id", None, "This process's index.")
  heartbeat = flags.DEFINE_integer(
      "heartbeat_timeout_s", 100, "A process that has not heard from a peer"
      " for this long stops with an error instead of hanging.")
  flags.mark_flags_as_required(["config", "workdir"])
  jax.config.config_with_absl()

  def run(argv):
    del argv
    quiet_library_logs()
    distributed.initialize(coordinator.value, num_processes.value,
                           process_id.value, heartbeat.value)
    result = train_and_evaluate(config_flag.value, workdir_flag.value)
    if result.get("signal") == "SIGINT":
      exit_as_interrupted()

  cli.run(run)


if __name__ == "__main__":
  main()
