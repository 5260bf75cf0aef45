#!/usr/bin/env bash
# launch/mpirun.sh -- lmforge train under OpenMPI with the flags this project needs: root and
# container safety, no CPU binding (lmforge splits cores between its thread pools itself).
# Usage: [LMFORGE_NP=4] [LMFORGE_HOSTS=a:2,b:2 | LMFORGE_HOSTFILE=F] [LMFORGE_RANKS_PER_NODE=2]
#        launch/mpirun.sh CONFIG [--set key=value ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
config=${1:?usage: launch/mpirun.sh CONFIG [--set key=value ...]}
shift
np=${LMFORGE_NP:-$(nproc)}
args=(-np "$np" --bind-to none
      --mca btl_vader_single_copy_mechanism none)  # containers forbid the cross-memory-attach copy
[ "$(id -u)" = 0 ] && args+=(--allow-run-as-root)
[ -n "${LMFORGE_HOSTS:-}" ] && args+=(--host "$LMFORGE_HOSTS")
[ -n "${LMFORGE_HOSTFILE:-}" ] && args+=(--hostfile "$LMFORGE_HOSTFILE")
[ -n "${LMFORGE_RANKS_PER_NODE:-}" ] && args+=(--map-by "ppr:${LMFORGE_RANKS_PER_NODE}:node")
# More ranks than cores on one machine (tests, laptops) needs --oversubscribe.
[ -z "${LMFORGE_HOSTS:-}${LMFORGE_HOSTFILE:-}" ] && [ "$np" -gt "$(nproc)" ] && args+=(--oversubscribe)
exec mpirun "${args[@]}" "${LMFORGE_BIN:-$root/build/lmforge}" train "$config" "$@"
