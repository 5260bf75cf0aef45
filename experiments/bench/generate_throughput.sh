#!/usr/bin/env bash
# experiments/bench/generate_throughput.sh -- builds and runs generate_throughput: greedy tokens/s
# with and without the KV cache, and HF directory load MB/s. Usage: generate_throughput.sh [HIDDEN LAYERS NEW PROMPT]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
"$root/launch/build.sh" generate_throughput >/dev/null
"$root/build/generate_throughput" "$@"
