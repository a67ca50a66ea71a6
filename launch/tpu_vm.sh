#!/usr/bin/env bash
# Runs a training job on every worker of a Cloud TPU VM (a single host or a pod
# slice), creating the TPU VM first if it does not exist.
#
#   launch/tpu_vm.sh --name my-tpu --zone us-central2-b --accelerator-type v4-32 \
#     [--version V] [--project P] [--spot] [--delete] [--dry-run] \
#     -- --config experiments/mnist1d_cnn.py --workdir /mnt/shared/runs/cnn
#
# Steps: create the TPU VM (unless it exists; --version defaults to the runtime
# Google recommends for the accelerator), copy the repository's committed HEAD
# (`git archive`: never the working tree, runs or secrets) to ~/deeplearn on all
# workers, install it with `pip install -e '.[tpu]'` into a Python 3.11 venv
# (~/deeplearn-venv, made by uv: the TPU images ship Python 3.10), then run
# `python -m deeplearn.train <flags after -->` on all workers at once, streaming
# their output here. Each worker finds the others through deeplearn.distributed
# (jax reads the TPU metadata). The workdir must be storage that every worker
# sees when the slice has several hosts.
#   --delete   delete the TPU VM when the script ends, however it ends (alone,
#              without train flags: just delete it)
#   --dry-run  print the commands instead of running them
set -euo pipefail

usage() {
  sed -n '2,23s/^# \{0,1\}//p' "$0" >&2
  exit "${1:-2}"
}

name="" zone="" accelerator="" version="" project="" spot=0 delete=0 dry_run=0
while (($# > 0)); do
  case "$1" in
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    --zone) zone="${2:?--zone needs a value}"; shift 2 ;;
    --accelerator-type) accelerator="${2:?--accelerator-type needs a value}"; shift 2 ;;
    --version) version="${2:?--version needs a value}"; shift 2 ;;
    --project) project="${2:?--project needs a value}"; shift 2 ;;
    --spot) spot=1; shift ;;
    --delete) delete=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage 0 ;;
    --) shift; break ;;
    *) echo "tpu_vm.sh: unknown option '$1' (train flags go after --)" >&2; usage ;;
  esac
done
if [[ -z "$name" || -z "$zone" ]]; then
  echo "tpu_vm.sh: --name and --zone are required" >&2
  usage
fi
if (($# == 0 && !delete)); then
  echo "tpu_vm.sh: give the train flags after --, or --delete alone" >&2
  usage
fi

# One word, quoted for a POSIX shell only if it needs it (like Python's
# shlex.quote), so printed commands paste back and read easily.
quote() {
  local q="'\\''"
  if [[ "$1" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/$q}"
  fi
}

# Prints a command, quoted, or runs it.
run() {
  if ((dry_run)); then
    local line="" word
    for word in "$@"; do line+="${line:+ }$(quote "$word")"; done
    printf '%s\n' "$line"
  else
    "$@"
  fi
}

tpu=(gcloud compute tpus tpu-vm)
where=("--zone=$zone")
if [[ -n "$project" ]]; then where+=("--project=$project"); fi

delete_vm() {
  echo "tpu_vm.sh: deleting $name" >&2
  run "${tpu[@]}" delete "$name" "${where[@]}" --quiet
}

if (($# == 0)); then
  delete_vm
  exit 0
fi

staging="$(mktemp -d)"
# shellcheck disable=SC2317  # run by the trap below
cleanup() {
  rm -rf "$staging"
  if ((delete)); then delete_vm; fi
}
trap cleanup EXIT

create=("${tpu[@]}" create "$name" "${where[@]}")
if [[ -n "$accelerator" ]]; then
  if [[ -z "$version" ]]; then
    case "$accelerator" in
      v6e-*) version=v2-alpha-tpuv6e ;;
      v5p-*) version=v2-alpha-tpuv5 ;;
      v5litepod-*) version=v2-alpha-tpuv5-lite ;;
      v2-* | v3-* | v4-*) version="tpu-ubuntu2204-base" ;;
      *) echo "tpu_vm.sh: no default --version for '$accelerator'; pass one" >&2; exit 2 ;;
    esac
  fi
  create+=("--accelerator-type=$accelerator" "--version=$version")
  if ((spot)); then create+=(--spot); fi
fi

if ((dry_run)); then
  run "${tpu[@]}" describe "$name" "${where[@]}"
  if [[ -n "$accelerator" ]]; then
    echo "# only if $name does not exist yet (describe failed):"
    run "${create[@]}"
  else
    echo "# $name must exist: without --accelerator-type it is not created"
  fi
elif "${tpu[@]}" describe "$name" "${where[@]}" >/dev/null 2>&1; then
  echo "tpu_vm.sh: using the existing TPU VM $name" >&2
else
  if [[ -z "$accelerator" ]]; then
    echo "tpu_vm.sh: $name does not exist; pass --accelerator-type to create it" >&2
    exit 2
  fi
  run "${create[@]}"
fi

repo="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]]; then
  echo "tpu_vm.sh: uncommitted changes are not copied (only HEAD is)" >&2
fi
archive="$staging/deeplearn.tar.gz"
run git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
run "${tpu[@]}" scp "$archive" "$name:deeplearn.tar.gz" "${where[@]}" --worker=all

# Extracted over ~/deeplearn rather than into a fresh copy, so that a relative
# --workdir (under ~/deeplearn) survives the next launch. $HOME and ~ are
# the worker's.
# shellcheck disable=SC2016
setup=(
  "mkdir -p ~/deeplearn"
  "tar -xzf ~/deeplearn.tar.gz -C ~/deeplearn"
  'export PATH="$HOME/.local/bin:$PATH"'
  "{ command -v uv >/dev/null || python3 -m pip install --user --quiet uv ||"
  " python3 -m pip install --user --quiet --break-system-packages uv; }"
  "uv venv --quiet --allow-existing --python 3.11 ~/deeplearn-venv"
  "uv pip install --quiet --python ~/deeplearn-venv/bin/python -e ~/deeplearn'[tpu]'"
  "{ ~/deeplearn-venv/bin/python -c 'import libtpu' || { echo 'libtpu missing:"
  " the tpu extra in setup.cfg must name jax[tpu]' >&2; exit 1; }; }"
)
setup_line=""
for step in "${setup[@]}"; do
  case "$step" in
    " "*) setup_line+="$step" ;;  # the rest of the step before
    *) setup_line+="${setup_line:+ && }$step" ;;
  esac
done
run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$setup_line"

train="cd ~/deeplearn && exec ~/deeplearn-venv/bin/python -m deeplearn.train"
for arg in "$@"; do train+=" $(quote "$arg")"; done
run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$train"
