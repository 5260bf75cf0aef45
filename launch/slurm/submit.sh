#!/usr/bin/env bash
# launch/slurm/submit.sh -- fills in launch/slurm/train.sbatch for a config and submits it; the
# job's output goes to <run.output_dir>/<run.name>/slurm-<jobid>.out. Prints the job id.
# Usage: submit.sh CONFIG [--nodes N] [--ntasks-per-node N] [--gpus-per-node N] [--time T]
#                  [--partition P] [--set key=value ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
config=${1:?usage: submit.sh CONFIG [--nodes N] [--ntasks-per-node N] [--gpus-per-node N] [--time T] [--partition P] [--set k=v ...]}
shift
slurm_args=() sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes|--ntasks-per-node|--time|--partition|--account|--qos) slurm_args+=("$1=$2"); shift 2 ;;
    --gpus-per-node) slurm_args+=("--gpus-per-node=$2"); shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "submit.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
lmforge=${LMFORGE_BIN:-$root/build/lmforge}
# The resolved config names the run directory; a bad config fails here, before the queue.
resolved=$("$lmforge" config show "$config" "${sets[@]}")
name=$(printf '%s\n' "$resolved" | awk '/^run:/ {r=1; next} /^[^ ]/ {r=0} r && $1 == "name:" {print $2; exit}')
out_dir=$(printf '%s\n' "$resolved" | awk '/^run:/ {r=1; next} /^[^ ]/ {r=0} r && $1 == "output_dir:" {print $2; exit}')
mkdir -p "$out_dir/$name"
LMFORGE_BIN=$lmforge sbatch --parsable --job-name="lmforge-$name" --output="$out_dir/$name/slurm-%j.out" \
  --export=ALL,LMFORGE_BIN="$lmforge" "${slurm_args[@]}" "$root/launch/slurm/train.sbatch" "$config" "${sets[@]}"
