#!/usr/bin/env bash
# launch/test.sh -- set-up, build, and run every test (GoogleTest suites and the CLI end-to-end
# script) through ctest. Exit code is ctest's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/launch/setup.sh"
"$root/launch/build.sh"
cd "$root/build"
ctest --output-on-failure --timeout 600 "$@"
