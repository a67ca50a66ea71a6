"""Starting `jax.distributed`: one call that works on a laptop, a TPU pod, SLURM.

Multi-host data parallelism needs every process to know the others before the
first computation: `jax.distributed.initialize` connects them to a coordinator
(process 0), after which `jax.devices()` lists every device of every host and
one jitted step runs across all of them. Where the coordinator comes from, in
order:

  1. flags (`--coordinator_address --num_processes --process_id`), then the
     environment variables DEEPLEARN_COORDINATOR, DEEPLEARN_NUM_PROCESSES,
     DEEPLEARN_PROCESS_ID (what launch/local.sh sets);
  2. a multi-host TPU VM pod slice (or a multislice run): jax reads the TPU
     metadata itself;
  3. a SLURM step with more than one task (`srun`): jax's SLURM detector, one
     process per task;
  4. otherwise one process, and nothing is started.
"""

import dataclasses
import glob
import os
import sys
import urllib.request

import jax

ENV_COORDINATOR = "DEEPLEARN_COORDINATOR"
ENV_NUM_PROCESSES = "DEEPLEARN_NUM_PROCESSES"
ENV_PROCESS_ID = "DEEPLEARN_PROCESS_ID"

# What jax's SLURM detector reads (jax/_src/clusters/slurm_cluster.py); the
# step variables exist only inside `srun`, not in the batch script itself.
SLURM_STEP_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                   "SLURM_PROCID", "SLURM_LOCALID")

_METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/attributes/"


@dataclasses.dataclass(frozen=True)
class Plan:
  """How this process joins the run; `kwargs` go to jax.distributed.initialize."""
  mode: str  # "explicit", "tpu", "slurm" or "single"
  how: str  # for the one line process 0 prints
  kwargs: dict = dataclasses.field(default_factory=dict)


def _int_from(value, name):
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} is not an integer.") from None


def _tpu_metadata(key, timeout_s=2.0):
  """A GCE metadata attribute; only asked where TPU chips are attached."""
  request = urllib.request.Request(_METADATA + key,
                                   headers={"Metadata-Flavor": "Google"})
  try:
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
      return response.read().decode()
  except OSError:
    return None


def tpu_workers(env) -> int:
  """Hosts in this TPU slice times slices; 0 when this is not a TPU VM.

  GKE sets TPU_WORKER_HOSTNAMES (or TPU_PROCESS_ADDRESSES) and multislice runs
  MEGASCALE_*, so those cost nothing to read. A VM from `gcloud compute tpus
  tpu-vm create` sets neither: its workers are in the metadata server, asked
  only when TPU chips are attached (/dev/accel* on v2-v5e, /dev/vfio on v5p
  and later), so other machines never wait on a network call.
  """
  slices = _int_from(env.get("MEGASCALE_NUM_SLICES", "1") or "1",
                     "MEGASCALE_NUM_SLICES")
  hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES")
  if hosts:
    return len(hosts.split(",")) * slices
  if env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return max(slices, 2)  # a multislice run spans hosts by definition
  if env.get("TPU_SKIP_MDS_QUERY") or not (
      glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
    return 0
  endpoints = _tpu_metadata("worker-network-endpoints")
  return len(endpoints.split(",")) * slices if endpoints else 0


def plan(coordinator_address=None, num_processes=None, process_id=None,
         heartbeat_timeout_s=100, env=None, tpu_workers_fn=tpu_workers) -> Plan:
  """Decides how to start, from arguments, then `env`, then the cluster."""
  env = os.environ if env is None else env
  flag_names = {"coordinator": "--coordinator_address",
                "num": "--num_processes", "pid": "--process_id"}
  if coordinator_address is None and env.get(ENV_COORDINATOR):
    coordinator_address = env[ENV_COORDINATOR]
    flag_names["coordinator"] = ENV_COORDINATOR
  if num_processes is None and env.get(ENV_NUM_PROCESSES):
    num_processes = _int_from(env[ENV_NUM_PROCESSES], ENV_NUM_PROCESSES)
    flag_names["num"] = ENV_NUM_PROCESSES
  if process_id is None and env.get(ENV_PROCESS_ID):
    process_id = _int_from(env[ENV_PROCESS_ID], ENV_PROCESS_ID)
    flag_names["pid"] = ENV_PROCESS_ID
  heartbeat = {"heartbeat_timeout_seconds": int(heartbeat_timeout_s)}

  if coordinator_address:
    missing = [f"{flag_names[k]} (or {env_name})" for k, value, env_name in (
        ("num", num_processes, ENV_NUM_PROCESSES),
        ("pid", process_id, ENV_PROCESS_ID)) if value is None]
    if missing:
      raise ValueError(
          f"{flag_names['coordinator']}={coordinator_address} needs "
          + " and ".join(missing) + ": every process is started with the same"
          " coordinator, the number of processes and its own id 0..N-1.")
    if ":" not in coordinator_address:
      raise ValueError(
          f"{flag_names['coordinator']}={coordinator_address!r} has no port:"
          " give HOST:PORT of process 0, e.g. localhost:12345.")
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(
          f"{flag_names['pid']}={process_id} with {flag_names['num']}="
          f"{num_processes}: ids run from 0 to {max(num_processes, 1) - 1}.")
    return Plan("explicit", f"{num_processes} processes, coordinator"
                f" {coordinator_address} (from {flag_names['coordinator']})",
                dict(coordinator_address=coordinator_address,
                     num_processes=num_processes, process_id=process_id,
                     **heartbeat))
  if num_processes == 1 and process_id in (None, 0):
    return Plan("single", f"1 process ({flag_names['num']}=1)")
  if num_processes is not None or process_id is not None:
    given = [f"{flag_names[k]}={v}" for k, v in (
        ("num", num_processes), ("pid", process_id)) if v is not None]
    raise ValueError(
        " and ".join(given) + " without a coordinator: also pass"
        " --coordinator_address=HOST:PORT (or DEEPLEARN_COORDINATOR), the"
        " address of process 0, the same on every process.")

  workers = tpu_workers_fn(env)
  if workers > 1:
    return Plan("tpu", f"TPU pod slice, {workers} hosts (jax reads the TPU"
                " metadata)", dict(heartbeat))

  if env.get("SLURM_JOB_ID") and env.get("SLURM_NTASKS"):
    tasks = _int_from(env["SLURM_NTASKS"], "SLURM_NTASKS")
    if tasks > 1:
      absent = [v for v in SLURM_STEP_VARS if v not in env]
      if absent:
        raise ValueError(
            f"SLURM job {env['SLURM_JOB_ID']} has {tasks} tasks, but this"
            f" process is not one of them ({', '.join(absent)} unset): start"
            " the train command with `srun` (see launch/slurm.sbatch), not"
            " directly in the batch script.")
      return Plan("slurm", f"SLURM job {env['SLURM_JOB_ID']}, {tasks} tasks"
                  " (one process per task)",
                  dict(cluster_detection_method="slurm", **heartbeat))
  return Plan("single", "1 process (no coordinator, TPU pod or SLURM job)")


def _exit_at_once_on_error():
  """An uncaught exception ends this process now, traceback printed.

  Otherwise jax's exit handler holds a failed process at a shutdown barrier
  for up to 5 minutes, waiting for peers that may be stuck waiting for it;
  exiting lets a launcher (local.sh, srun) see the failure and stop the rest,
  and the peers' heartbeat notices it too.
  """
  previous = sys.excepthook

  def hook(*exc_info):
    previous(*exc_info)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access

  sys.excepthook = hook


def initialize(coordinator_address=None, num_processes=None, process_id=None,
               heartbeat_timeout_s=100) -> None:
  """Starts jax.distributed as `plan` decides; process 0 says which way.

  In a multi-process run an uncaught exception then exits the process at
  once (status 1) instead of after jax's shutdown barrier times out.
  """
  p = plan(coordinator_address, num_processes, process_id, heartbeat_timeout_s)
  lead = True  # a single process, asked without starting the backend early
  if p.mode != "single":
    try:
      jax.distributed.initialize(**p.kwargs)
    except Exception as e:  # name the source: a port or a peer is the usual fix
      raise RuntimeError(
          f"jax.distributed.initialize failed for {p.how}: {e}") from e
    lead = jax.process_index() == 0
    _exit_at_once_on_error()
  if lead:
    print(f"distributed: {p.how}", flush=True)
