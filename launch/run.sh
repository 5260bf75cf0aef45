#!/usr/bin/env bash
# launch/run.sh -- the main job for a new user, on CPU: set-up, build, then the whole story:
#   1. pre-train configs/quickstart.yaml (a ~3M-parameter Llama on fortunes; extra arguments go to
#      this `lmforge train`, e.g. --set train.max_steps=50),
#   2. write the upper-casing instruction task and score the base model on it (exact match),
#   3. LoRA fine-tune it (configs/quickstart_sft.yaml) and score it again,
#   4. the adapter is exported in HF PEFT format by the run (RUN/export/adapter).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/launch/setup.sh"
"$root/launch/build.sh" lmforge
cd "$root"
lmforge=$root/build/lmforge
newest_run() { ls -d "runs/$1"/*/ | sort | tail -1; }

"$lmforge" train configs/quickstart.yaml "$@"
base=$(newest_run quickstart)export
python3 configs/tasks/make_uppercase_task.py runs/tasks
echo "== the base model on the task"
"$lmforge" eval --model "$base" configs/eval/uppercase.yaml
"$lmforge" train configs/quickstart_sft.yaml --set model.from="$base"
tuned=$(newest_run quickstart-sft)
echo "== the LoRA fine-tune on the task (adapter: ${tuned}export/adapter)"
"$lmforge" eval --model "$base" --adapter "${tuned}export/adapter" configs/eval/uppercase.yaml
