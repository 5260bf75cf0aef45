#!/usr/bin/env bash
# launch/build.sh -- configures (once) and builds lmforge into build/ with ninja and ccache.
# Used by run.sh and test.sh; pass targets to build only those.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
# Each LibTorch translation unit needs ~1.5 GB to compile; one job per core fits in memory.
cmake --build "$build" -- "$@"
