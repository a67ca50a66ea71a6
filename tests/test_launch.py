"""Launch scripts and deeplearn.distributed: how multi-process runs start.

The TPU VM and SLURM scripts cannot run here: tpu_vm.sh is checked through its
--dry-run output, slurm.sbatch through a stand-in `srun`, and the TPU and SLURM
paths of deeplearn.distributed through the environments they read (the SLURM
one for real, two processes joining through jax's SLURM detector).
"""

import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from deeplearn import config as config_lib, distributed, metrics, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = ["local.sh", "tpu_vm.sh", "slurm.sbatch"]


def free_port():
  """Like local.sh: below the ephemeral range, which other tests draw from."""
  for port in random.sample(range(20000, 32768), 200):
    with socket.socket() as s:
      try:
        s.bind(("", port))
      except OSError:
        continue
    return port
  raise RuntimeError("no free port in 20000-32767")


def clean_env(**extra):
  """This process's environment without any run it may be part of."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("DEEPLEARN_", "SLURM_", "TPU_", "MEGASCALE_"))}
  return {**env, **extra}


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck_passes(script):
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
  result = subprocess.run(["shellcheck", os.path.join(LAUNCH, script)],
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


# deeplearn.distributed: which way a process joins the run.

def no_tpu(env):
  del env
  return 0


def plan(env, *args, **kwargs):
  return distributed.plan(*args, env=env, tpu_workers_fn=no_tpu, **kwargs)


def test_no_cluster_means_one_process():
  assert plan({}).mode == "single"
  assert plan({}, None, 1, None).mode == "single"  # --num_processes=1


def test_flags_give_an_explicit_run():
  p = plan({}, "host0:1234", 4, 3, heartbeat_timeout_s=10)
  assert p.mode == "explicit"
  assert p.kwargs == dict(coordinator_address="host0:1234", num_processes=4,
                          process_id=3, heartbeat_timeout_seconds=10)


def test_environment_variables_stand_in_for_flags_and_flags_win():
  env = {"DEEPLEARN_COORDINATOR": "envhost:1", "DEEPLEARN_NUM_PROCESSES": "2",
         "DEEPLEARN_PROCESS_ID": "1"}
  assert plan(env).kwargs["coordinator_address"] == "envhost:1"
  assert plan(env).kwargs["process_id"] == 1
  p = plan(env, "flaghost:2", None, 0)
  assert (p.kwargs["coordinator_address"], p.kwargs["num_processes"],
          p.kwargs["process_id"]) == ("flaghost:2", 2, 0)


@pytest.mark.parametrize("args, env, message", [
    ((None, None, 1), {}, r"--process_id=1 without a coordinator"),
    ((None, 2, None), {}, r"--num_processes=2 without a coordinator"),
    (("h:1", None, 0), {}, r"needs --num_processes \(or DEEPLEARN_NUM_PROCESSES\)"),
    ((None, None, None), {"DEEPLEARN_COORDINATOR": "h:1",
                          "DEEPLEARN_NUM_PROCESSES": "2"},
     r"DEEPLEARN_COORDINATOR=h:1 needs --process_id"),
    (("h:1", 2, 2), {}, r"--process_id=2 with --num_processes=2: ids run from 0 to 1"),
    (("host0", 2, 0), {}, r"has no port"),
    ((None, None, None), {"DEEPLEARN_PROCESS_ID": "one"},
     r"DEEPLEARN_PROCESS_ID='one' is not an integer"),
])
def test_incomplete_or_wrong_settings_fail_naming_the_fix(args, env, message):
  with pytest.raises(ValueError, match=message):
    plan(env, *args)


def test_a_tpu_pod_slice_lets_jax_read_the_tpu_metadata():
  gke = {"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3", "TPU_WORKER_ID": "2"}
  p = distributed.plan(env=gke, heartbeat_timeout_s=30)
  assert p.mode == "tpu" and "4 hosts" in p.how
  assert p.kwargs == {"heartbeat_timeout_seconds": 30}  # jax finds the rest
  multislice = {"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2",
                "MEGASCALE_NUM_SLICES": "2"}
  assert distributed.plan(env=multislice).mode == "tpu"
  single_host = {"TPU_WORKER_HOSTNAMES": "localhost"}
  assert distributed.plan(env=single_host).mode == "single"


def test_a_tpu_vm_is_asked_its_workers_only_when_tpu_chips_are_attached(
    monkeypatch):
  asked = []
  monkeypatch.setattr(distributed, "_tpu_metadata",
                      lambda key: asked.append(key) or "10.0.0.1,10.0.0.2")
  monkeypatch.setattr(distributed.glob, "glob", lambda pattern: [])
  assert distributed.tpu_workers({}) == 0 and not asked  # no network call
  monkeypatch.setattr(distributed.glob, "glob",
                      lambda pattern: ["/dev/accel0"] * pattern.startswith("/dev/accel"))
  assert distributed.tpu_workers({}) == 2
  assert asked == ["worker-network-endpoints"]
  assert distributed.tpu_workers({"TPU_SKIP_MDS_QUERY": "1"}) == 0


SLURM_STEP = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "16",
              "SLURM_STEP_NODELIST": "gpu[01-02]", "SLURM_PROCID": "9",
              "SLURM_LOCALID": "1"}


def test_a_slurm_step_uses_jax_slurm_detector():
  p = plan(SLURM_STEP)
  assert p.mode == "slurm" and "16 tasks" in p.how
  assert p.kwargs["cluster_detection_method"] == "slurm"
  assert plan({**SLURM_STEP, "SLURM_NTASKS": "1"}).mode == "single"
  assert plan(SLURM_STEP, "h:1", 2, 0).mode == "explicit"  # flags first


def test_a_slurm_batch_script_without_srun_fails_instead_of_hanging():
  batch = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "16"}
  with pytest.raises(ValueError, match=r"16 tasks.*start the train command"
                     r" with `srun`"):
    plan(batch)


def test_initialize_starts_jax_distributed_as_planned(monkeypatch, capsys):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize",
                      lambda **kwargs: calls.append(kwargs))
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after
  for key in ("DEEPLEARN_COORDINATOR", "DEEPLEARN_NUM_PROCESSES",
              "DEEPLEARN_PROCESS_ID", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES",
              "MEGASCALE_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(key, raising=False)
  monkeypatch.setattr(distributed, "tpu_workers", no_tpu)
  distributed.initialize()
  assert calls == []
  assert "distributed: 1 process" in capsys.readouterr().out
  distributed.initialize("localhost:5", 2, 0, heartbeat_timeout_s=7)
  assert calls == [dict(coordinator_address="localhost:5", num_processes=2,
                        process_id=0, heartbeat_timeout_seconds=7)]
  assert "distributed: 2 processes, coordinator localhost:5" in (
      capsys.readouterr().out)


SNIPPET = textwrap.dedent("""
    import sys
    import jax
    from jax.experimental import multihost_utils
    from deeplearn import distributed
    distributed.initialize(heartbeat_timeout_s=10)
    if jax.process_index() == 1 and {fail!r}:
      raise ValueError("process 1 fails")
    ids = multihost_utils.process_allgather(jax.numpy.array([jax.process_index()]))
    # One write: gloo's own lines on stderr share the pipe.
    sys.stdout.write(f"joined {{jax.process_count()}} {{ids.ravel().tolist()}}\\n")
    sys.stdout.flush()
""")


def start_snippet(env, fail=False):
  return subprocess.Popen([sys.executable, "-c", SNIPPET.format(fail=fail)],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def test_two_processes_join_through_the_slurm_environment():
  port = free_port()
  procs = [start_snippet(clean_env(
      JAX_PLATFORMS="cpu", SLURM_JOB_ID="4242", SLURM_NTASKS="2",
      SLURM_STEP_NODELIST="localhost", SLURM_PROCID=str(i),
      SLURM_LOCALID=str(i), JAX_COORDINATOR_PORT=str(port))) for i in range(2)]
  outs = [p.communicate(timeout=120)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
    assert "joined 2 [0, 1]" in out, out[-3000:]
  assert "distributed: SLURM job 4242, 2 tasks" in outs[0]
  assert "distributed:" not in outs[1]  # one line, from process 0


def test_a_failing_process_exits_at_once_not_after_the_shutdown_barrier():
  port = free_port()
  procs = [start_snippet(clean_env(
      JAX_PLATFORMS="cpu", DEEPLEARN_COORDINATOR=f"localhost:{port}",
      DEEPLEARN_NUM_PROCESSES="2", DEEPLEARN_PROCESS_ID=str(i)), fail=True)
           for i in range(2)]
  try:
    out = procs[1].communicate(timeout=60)[0]  # jax alone would wait 300 s
  finally:
    for p in procs:
      p.kill()
      p.communicate()
  assert procs[1].returncode == 1
  assert "ValueError: process 1 fails" in out


# launch/local.sh process handling, with a stand-in for python.

FAKE_PYTHON = """#!/usr/bin/env bash
if [[ "$1" == - ]]; then exec "$REAL_PYTHON" "$@"; fi  # local.sh's port pick
echo "process $DEEPLEARN_PROCESS_ID of $DEEPLEARN_NUM_PROCESSES at $DEEPLEARN_COORDINATOR"
echo "argv: $*"
echo "XLA_FLAGS=$XLA_FLAGS JAX_PLATFORMS=$JAX_PLATFORMS"
echo $$ > "$FAKE_DIR/pid_$DEEPLEARN_PROCESS_ID"
case "$FAKE_MODE:$DEEPLEARN_PROCESS_ID" in
  ok:*) exit 0 ;;
  fail:1) sleep 0.5; exit 3 ;;
  fail:*) trap '' TERM; exec sleep 600 ;;  # a peer stuck in a collective
  *) exec sleep 600 ;;
esac
"""


@pytest.fixture
def fake_python(tmp_path):
  path = tmp_path / "python"
  path.write_text(FAKE_PYTHON)
  path.chmod(0o755)

  def env(mode):
    return clean_env(PYTHON=str(path), REAL_PYTHON=sys.executable,
                     FAKE_DIR=str(tmp_path), FAKE_MODE=mode,
                     XLA_FLAGS="--xla_force_host_platform_device_count=8")
  return env


def local_sh(*args, env, **kwargs):
  return subprocess.Popen([os.path.join(LAUNCH, "local.sh"), *args], env=env,
                          cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kwargs)


def assert_dead(pid_file):
  pid = int(pid_file.read_text())
  with pytest.raises(ProcessLookupError):
    os.kill(pid, 0)


def test_local_sh_gives_each_process_its_id_devices_and_log(fake_python,
                                                            tmp_path):
  workdir = tmp_path / "run"
  proc = local_sh("-n", "3", "-d", "2", "--", "--config", "x.py:tiny",
                  "--workdir", str(workdir), "--config.a=b c",
                  env=fake_python("ok"))
  out, err = proc.communicate(timeout=30)
  assert proc.returncode == 0, err
  logs = [(workdir / "logs" / f"process_{i}.log").read_text() for i in range(3)]
  port = int(logs[0].split("at localhost:")[1].split()[0])
  for i, log in enumerate(logs):
    assert f"process {i} of 3 at localhost:{port}" in log
    assert (f"argv: -m deeplearn.train --config x.py:tiny --workdir {workdir}"
            f" --config.a=b c --coordinator_address=localhost:{port}"
            f" --num_processes=3 --process_id={i}") in log
    # The device count replaces the one already set, and CPU is the default.
    assert "XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu" in log
  assert out.strip() == logs[0].strip()  # only process 0 on the terminal


def test_local_sh_stops_every_process_when_one_fails(fake_python, tmp_path):
  proc = local_sh("-n", "3", "--", "--workdir", str(tmp_path / "run"),
                  env=fake_python("fail"))
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 3
  assert "process 1 exited with status 3; stopping the others" in err
  for i in range(3):
    assert_dead(tmp_path / f"pid_{i}")


def test_local_sh_ctrl_c_stops_every_process(fake_python, tmp_path):
  proc = local_sh("--", "--workdir", str(tmp_path / "run"),
                  env=fake_python("wait"))
  deadline = time.time() + 30
  while not all((tmp_path / f"pid_{i}").exists() for i in range(2)):
    assert time.time() < deadline and proc.poll() is None
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=30)
  assert proc.returncode == 130
  assert "each process saves a checkpoint" in err
  for i in range(2):
    assert_dead(tmp_path / f"pid_{i}")


@pytest.mark.parametrize("args, message", [
    (["-n", "0", "--", "--workdir", "w"], "positive integers, got '0'"),
    (["--", "--config", "x.py"], "pass --workdir DIR after --"),
    (["--workdir", "w"], "unknown option '--workdir' (train flags go after --)"),
])
def test_local_sh_rejects_bad_usage(fake_python, args, message):
  proc = local_sh(*args, env=fake_python("ok"))
  _, err = proc.communicate(timeout=30)
  assert proc.returncode == 2 and message in err


# The real thing: 2 processes x 4 CPU devices train like 1 process x 8.

TINY_OVERRIDES = ["--config.train.num_steps=10", "--config.train.log_every=1",
                  "--config.train.eval_every=1000",
                  "--config.train.checkpoint_every=1000",
                  "--config.train.progress=False"]


def train_losses(workdir):
  records = metrics.read_records(os.path.join(workdir, "metrics.jsonl"))
  train_records = [r for r in records if r["split"] == "train"]
  return ([r["step"] for r in train_records],
          np.array([r["loss"] for r in train_records]))


def test_local_sh_two_processes_match_one_process_with_eight_devices(
    tfds_data_dir, tmp_path):
  experiment = os.path.join(ROOT, "experiments", "mnist1d_cnn.py:tiny")
  flags = ["--config", experiment,
           f"--config.data.data_dir={tfds_data_dir}", *TINY_OVERRIDES]
  # The reference, in this process (8 devices, from conftest); it also
  # prepares the data, so the two processes below only read it.
  config = config_lib.from_file(experiment)
  config.data.data_dir = tfds_data_dir
  config.train.update(num_steps=10, log_every=1, eval_every=1000,
                      checkpoint_every=1000, progress=False)
  assert jax.device_count() == 8
  train.train_and_evaluate(config, str(tmp_path / "one"))

  workdir = tmp_path / "two"
  result = subprocess.run(
      [os.path.join(LAUNCH, "local.sh"), "-n", "2", "-d", "4", "--", *flags,
       "--workdir", str(workdir)],
      cwd=ROOT, env=clean_env(PYTHON=sys.executable), capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "2 process(es), 8 devices, mesh data=8" in result.stdout
  assert "[Gloo]" not in result.stdout  # the terminal copy leaves them out
  assert (workdir / "logs" / "process_1.log").exists()
  steps, losses = train_losses(str(workdir))
  ref_steps, ref_losses = train_losses(str(tmp_path / "one"))
  assert steps == ref_steps == list(range(1, 11))
  np.testing.assert_allclose(losses, ref_losses, rtol=0, atol=1e-5)
  with open(workdir / "summary.json") as f:
    assert json.load(f)["final"]["step"] == 10


# launch/tpu_vm.sh and launch/slurm.sbatch, without gcloud or SLURM.

def stand_in(tmp_path, name):
  """A `name` on PATH that records its arguments, one per line, and exits 0."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  path = bin_dir / name
  path.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "{tmp_path}/{name}.args"\n')
  path.chmod(0o755)
  return f"{bin_dir}:{os.environ['PATH']}"


def test_tpu_vm_dry_run_prints_every_gcloud_step_quoted(tmp_path):
  train_flags = ["--config", "experiments/mnist1d_cnn.py",
                 "--workdir", "/mnt/shared/it's a run",
                 "--config.optimizer.name=$(not run) & `nor this`"]
  result = subprocess.run(
      [os.path.join(LAUNCH, "tpu_vm.sh"), "--name", "my tpu", "--zone",
       "us-east5-a", "--accelerator-type", "v5litepod-16", "--project", "p1",
       "--spot", "--delete", "--dry-run", "--", *train_flags],
      cwd=ROOT, env=clean_env(PATH=stand_in(tmp_path, "gcloud")),
      capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert not (tmp_path / "gcloud.args").exists()  # printed, never run
  commands = [shlex.split(line) for line in result.stdout.splitlines()
              if not line.startswith("#")]
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  where = ["--zone=us-east5-a", "--project=p1"]
  assert commands[0] == [*tpu, "describe", "my tpu", *where]
  assert commands[1] == [*tpu, "create", "my tpu", *where,
                         "--accelerator-type=v5litepod-16",
                         "--version=v2-alpha-tpuv5-lite", "--spot"]
  assert commands[2][:3] == ["git", "-C", ROOT]
  assert commands[2][3:6] == ["archive", "--format=tar.gz", "-o"]
  assert commands[2][-1] == "HEAD"
  archive = commands[2][6]
  assert commands[3] == [*tpu, "scp", archive, "my tpu:deeplearn.tar.gz",
                         *where, "--worker=all"]
  assert commands[4][:9] == [*tpu, "ssh", "my tpu", *where, "--worker=all"]
  setup = commands[4][9]
  assert setup.startswith("--command=") and "tar -xzf ~/deeplearn.tar.gz" in setup
  assert "pip install" in setup and "-e ~/deeplearn'[tpu]'" in setup
  assert commands[5][:9] == commands[4][:9]
  remote = shlex.split(commands[5][9].removeprefix("--command="))
  assert remote[:7] == ["cd", "~/deeplearn", "&&", "exec",
                        "~/deeplearn-venv/bin/python", "-m", "deeplearn.train"]
  assert remote[7:] == train_flags  # every argument arrives intact
  assert commands[6] == [*tpu, "delete", "my tpu", *where, "--quiet"]
  assert len(commands) == 7


def test_tpu_vm_refuses_an_unknown_accelerator_without_a_version():
  result = subprocess.run(
      [os.path.join(LAUNCH, "tpu_vm.sh"), "--name", "t", "--zone", "z",
       "--accelerator-type", "v99-8", "--dry-run", "--", "--workdir", "w"],
      capture_output=True, text=True, timeout=60)
  assert result.returncode == 2 and "no default --version" in result.stderr


def test_slurm_sbatch_runs_the_train_command_under_srun(tmp_path):
  path = stand_in(tmp_path, "srun")
  flags = ["--config", "experiments/mnist1d_cnn.py", "--workdir", "/shared/a b"]
  result = subprocess.run(
      ["bash", os.path.join(LAUNCH, "slurm.sbatch"), *flags],
      env=clean_env(PATH=path, SLURM_SUBMIT_DIR=str(tmp_path)),
      capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  args = (tmp_path / "srun.args").read_text().splitlines()
  assert args == ["--kill-on-bad-exit=1", "python", "-m", "deeplearn.train",
                  *flags]
