#!/usr/bin/env bash
# launch/run.sh -- the main job for a new user: set-up, build, then train configs/quickstart.yaml
# (extra arguments go to `lmforge train`, e.g. --set train.max_steps=50).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/launch/setup.sh"
"$root/launch/build.sh" lmforge
cd "$root"
exec "$root/build/lmforge" train configs/quickstart.yaml "$@"
