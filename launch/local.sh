#!/usr/bin/env bash
# Runs one training job as N local processes with D simulated CPU devices each:
# a multi-host run (jax.distributed, one coordinator, per-process data shards)
# on one machine, to test multi-host code without a pod.
#
#   launch/local.sh [-n 2] [-d 4] -- --config experiments/mnist1d_cnn.py --workdir runs/local
#
# Everything after `--` goes to `python -m deeplearn.train` on every process.
# Process i writes WORKDIR/logs/process_<i>.log; process 0 also prints to the
# terminal, less gloo's connection lines. If one process fails, or on Ctrl-C,
# the others are stopped (SIGTERM, then SIGKILL) and the script exits non-zero;
# Ctrl-C makes every process save a checkpoint first, so re-running resumes.
# Environment: PYTHON (default python3), JAX_PLATFORMS (default cpu).
set -euo pipefail

usage() {
  sed -n '2,13s/^# \{0,1\}//p' "$0" >&2
  exit "${1:-2}"
}

num_processes=2
devices=4
while (($# > 0)); do
  case "$1" in
    -n) num_processes="${2:?-n needs a number}"; shift 2 ;;
    -d) devices="${2:?-d needs a number}"; shift 2 ;;
    -h | --help) usage 0 ;;
    --) shift; break ;;
    *) echo "local.sh: unknown option '$1' (train flags go after --)" >&2; usage ;;
  esac
done
for value in "$num_processes" "$devices"; do
  if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
    echo "local.sh: -n and -d take positive integers, got '$value'" >&2
    exit 2
  fi
done
(($# > 0)) || usage

# The logs go in the run's workdir, so find it among the train flags.
workdir=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --workdir=*) workdir="${args[i]#--workdir=}" ;;
    --workdir) workdir="${args[i + 1]:-}" ;;
  esac
done
if [[ -z "$workdir" ]]; then
  echo "local.sh: pass --workdir DIR after -- (the logs go to DIR/logs)" >&2
  exit 2
fi
logs="$workdir/logs"
mkdir -p "$logs"

python="${PYTHON:-python3}"
# A free port below the ephemeral ranges (Linux 32768+, macOS 49152+): the OS
# hands those out to anyone's bind(0) or outgoing connection, so one from there
# could be taken by another program before process 0 binds it.
port="$("$python" - <<'PY'
import random, socket
for port in random.sample(range(20000, 32768), 200):
  with socket.socket() as s:
    try:
      s.bind(("", port))
    except OSError:
      continue
  print(port)
  break
PY
)"
if [[ -z "$port" ]]; then
  echo "local.sh: no free port found in 20000-32767" >&2
  exit 1
fi
coordinator="localhost:$port"

# Replace any device-count flag already in XLA_FLAGS rather than adding a second.
xla_flags=""
read -r -a flags <<<"${XLA_FLAGS:-}"
for flag in ${flags[@]+"${flags[@]}"}; do
  [[ "$flag" == --xla_force_host_platform_device_count=* ]] || xla_flags+="$flag "
done
xla_flags+="--xla_force_host_platform_device_count=$devices"

# Process 0's output goes through a FIFO to tee, so that its pid is python's own
# (to wait on and to signal) and the terminal copy is flushed before we exit.
fifo_dir="$(mktemp -d)"
pids=()
tee_pid=""

# SIGTERM first: train.py then saves a checkpoint at the next step on every
# process (jax's preemption sync) and exits 0. A process whose peer died never
# reaches that step, so after `grace` seconds the rest get SIGKILL.
stop_all() {
  local grace="$1" pid alive
  for pid in ${pids[@]+"${pids[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq $((grace * 10))); do
    alive=0
    for pid in ${pids[@]+"${pids[@]}"}; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    ((alive)) || return 0
    sleep 0.1
  done
  for pid in ${pids[@]+"${pids[@]}"}; do kill -KILL "$pid" 2>/dev/null || true; done
}

# shellcheck disable=SC2317,SC2329  # run by the trap below
on_interrupt() {
  if ((interrupted)); then
    echo "local.sh: killing all processes" >&2
    for pid in ${pids[@]+"${pids[@]}"}; do kill -KILL "$pid" 2>/dev/null || true; done
    exit 130
  fi
  interrupted=1
  echo "local.sh: stopping: each process saves a checkpoint (Ctrl-C again to kill)" >&2
  stop_all 60
  exit 130
}

# shellcheck disable=SC2317,SC2329  # run by the trap below
cleanup() {
  if [[ -n "$tee_pid" ]]; then wait "$tee_pid" 2>/dev/null || true; fi
  rm -rf "$fifo_dir"
}
interrupted=0
trap cleanup EXIT
# Background children ignore SIGINT (no job control here), so Ctrl-C reaches
# only this script, which turns it into an orderly stop.
trap on_interrupt INT
trap 'echo "local.sh: terminated, stopping all processes" >&2; stop_all 60; exit 143' TERM

echo "local.sh: $num_processes processes x $devices CPU devices, coordinator $coordinator, logs in $logs" >&2
for ((i = 0; i < num_processes; i++)); do
  # Both the flags train.py reads and the variables deeplearn.distributed reads.
  cmd=(env "XLA_FLAGS=$xla_flags" "JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}"
    "DEEPLEARN_COORDINATOR=$coordinator"
    "DEEPLEARN_NUM_PROCESSES=$num_processes" "DEEPLEARN_PROCESS_ID=$i"
    "$python" -m deeplearn.train "$@"
    "--coordinator_address=$coordinator" "--num_processes=$num_processes"
    "--process_id=$i")
  log="$logs/process_$i.log"
  if ((i == 0)); then
    mkfifo "$fifo_dir/out"
    # The log keeps everything; the terminal leaves out gloo's connection
    # lines (one per peer and device: CPU collectives' set-up, not news).
    tee "$log" <"$fifo_dir/out" | grep --line-buffered -v '^\[Gloo\]' &
    tee_pid=$!
    "${cmd[@]}" >"$fifo_dir/out" 2>&1 &
  else
    "${cmd[@]}" >"$log" 2>&1 &
  fi
  pids+=($!)
done

# Poll rather than `wait -n`, which macOS's bash 3.2 lacks; bash reaps each
# child as it exits, so `kill -0` fails from then on and `wait` gives its status.
status=0
running=("${!pids[@]}")
while ((${#running[@]} > 0)); do
  still=()
  for i in "${running[@]}"; do
    if kill -0 "${pids[i]}" 2>/dev/null; then
      still+=("$i")
      continue
    fi
    rc=0
    wait "${pids[i]}" || rc=$?
    if ((rc != 0 && status == 0)); then
      status=$rc
      echo "local.sh: process $i exited with status $rc; stopping the others." >&2
      if ((i != 0)); then
        echo "--- last lines of $logs/process_$i.log:" >&2
        tail -n 20 "$logs/process_$i.log" >&2
      fi
      stop_all 3
    fi
  done
  running=("${still[@]+"${still[@]}"}")
  ((${#running[@]} == 0)) || sleep 0.2
done
exit "$status"
