#!/usr/bin/env bash
# launch/setup.sh -- installs the Debian packages lmforge needs that are missing. Idempotent;
# silent when nothing is missing; works as root or through sudo. Downloads nothing else.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-pthread     # LibTorch; without OpenBLAS it falls back to a 25x slower BLAS
  libopenmpi-dev openmpi-bin            # data parallelism on CPUs
  libhdf5-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libssl-dev
  hdf5-tools                            # h5dump: tests read shards with an independent tool
  libsentencepiece-dev libpcre2-dev libgtest-dev libpng-dev
  fortunes fortunes-min                 # the English corpus the quickstart and CI train on
  python3-torch                         # the Python baseline in experiments/bench
  slurmctld slurmd slurm-client munge   # the local Slurm cluster tests/launch/slurm_test.sh starts
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "setup: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
