#!/usr/bin/env bash
# launch/run.sh -- the main job for a new user, on CPU: set-up, build, then the whole story:
#   1. pre-train configs/quickstart.yaml (a ~3M-parameter Llama on fortunes; extra arguments go to
#      this `lmforge train`, e.g. --set train.max_steps=50),
#   2. write the upper-casing instruction task (configs/tasks/make_uppercase_task.py),
#   3. LoRA fine-tune the model on it (configs/quickstart_sft.yaml; the run exports the adapter in
#      HF PEFT format to RUN/export/adapter and the merged model to RUN/export),
#   4. score the fine-tune against its base on held-out prompts (exact match, side by side).
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
"$lmforge" train configs/quickstart_sft.yaml --set model.from="$base"
tuned=$(newest_run quickstart-sft)
echo "== exact match on held-out prompts: base + the exported PEFT adapter (B) against the base (A)"
"$lmforge" eval --model "$base" --adapter "${tuned}export/adapter" --compare "$base" configs/eval/uppercase.yaml
