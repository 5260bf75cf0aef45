#!/usr/bin/env bash
# tests/launch/checkpoint_test.sh -- checkpoints end to end with real processes: SIGKILL at an
# unannounced step then resume (1 and 2 ranks, bit-exact), preemption by a signal to one rank
# (exit 3), damaged checkpoints, kills inside each stage of a save, a full disk, `runs diff`.
# Usage: checkpoint_test.sh PATH/TO/lmforge "MPIRUN AND ITS FLAGS"   (from the source root)
set -u
LMFORGE=${1:?usage: checkpoint_test.sh LMFORGE MPIRUN}
read -r -a MPIRUN <<<"${2:?}"
work=$(mktemp -d)
trap 'pkill -9 -f "$work" 2>/dev/null; rm -rf "$work"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; sed 's/^/    /' "$work/out" | tail -20; }
common=(--set train.max_steps=120 --set train.log_every=1 --set train.eval_every=0 --set checkpoint.every_steps=10
        --set "data.cache_dir=$work/cache")
# "step loss" per training row, as written (shortest round-trip decimals: equal text = equal doubles).
series() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if "loss" in r: print(r["step"], repr(r["loss"]))' "$1/metrics.jsonl"; }
run_dir() { ls -d "$1"/tiny/*/ 2>/dev/null | head -1; }
# Waits until the run under $1 has logged step >= $2, then SIGKILLs every process of that run.
kill_at_step() {
  for _ in $(seq 600); do
    d=$(run_dir "$1")
    if [ -n "$d" ] && [ "$(tail -1 "$d/metrics.jsonl" 2>/dev/null | grep -o '"step":[0-9]*' | cut -d: -f2)" -ge "$2" ] 2>/dev/null; then
      pkill -9 -f "run.output_dir=$1" ; sleep 0.5; return 0
    fi
    sleep 0.05
  done
  return 1
}
same_series() {  # $1 reference run dir, $2 run dir, $3 label
  if [ "$(ls -d "$(dirname "$2")"/*/ | wc -l)" = 1 ] && diff <(series "$1") <(series "$2") >"$work/out" \
    && cmp "$1/model.safetensors" "$2/model.safetensors" >>"$work/out" 2>&1; then
    ok "$3: one run, the same $(series "$2" | wc -l) losses bit for bit, identical final weights"
  else not_ok "$3"; fi
}

"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/ref" >"$work/out" 2>&1 \
  && ok "uninterrupted 1-rank reference" || not_ok "reference run"
ref=$(run_dir "$work/ref")
timeout 300 "${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/ref2" \
  >"$work/out" 2>&1 && ok "uninterrupted 2-rank reference" || not_ok "2-rank reference run"
ref2=$(run_dir "$work/ref2")

# SIGKILL at a random step, then the same command again: resume: auto continues the run.
k=$((RANDOM % 60 + 25))
"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/kill1" >"$work/out" 2>&1 &
kill_at_step "$work/kill1" $k || not_ok "the 1-rank run never reached step $k"
"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/kill1" >"$work/out" 2>&1 \
  && grep -q "resumed from" "$work/out" && ok "killed near step $k, resumed: $(grep -o 'resumed from .*' "$work/out")" \
  || not_ok "1-rank resume after SIGKILL"
same_series "$ref" "$(run_dir "$work/kill1")" "1 rank, SIGKILL + resume"
grep -q '"resumed"' "$(run_dir "$work/kill1")/meta.json" && grep -q '"status": "completed"' "$(run_dir "$work/kill1")/meta.json" \
  && ok "meta.json records the resume and completion" || not_ok "meta.json after resume"

k=$((RANDOM % 60 + 25))
"${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/kill2" >"$work/out" 2>&1 &
kill_at_step "$work/kill2" $k || not_ok "the 2-rank run never reached step $k"
wait
timeout 300 "${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/kill2" \
  >"$work/out" 2>&1 && ok "2 ranks killed near step $k and resumed" || not_ok "2-rank resume after SIGKILL"
same_series "$ref2" "$(run_dir "$work/kill2")" "2 ranks, SIGKILL + resume"

# The same run resumed by a different number of ranks with the same global batch (2 ranks, then
# 1 rank with 2 accumulation steps). Gradients are then summed in another order, so the losses
# after the resume agree within 1e-3 relative (as in data_parallel_test.sh), not bit for bit.
k=$((RANDOM % 40 + 25))
"${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/reshape" >"$work/out" 2>&1 &
kill_at_step "$work/reshape" $k || not_ok "the 2-rank run never reached step $k"
wait
"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set train.grad_accum_steps=2 --set "run.output_dir=$work/reshape" \
  >"$work/out" 2>&1 && grep -q "resumed from" "$work/out" && ok "2-rank run resumed on 1 rank (same global batch)" \
  || not_ok "resume with another number of ranks"
paste <(series "$ref2") <(series "$(run_dir "$work/reshape")") >"$work/out"
if [ "$(wc -l <"$work/out")" = 120 ] && awk '{ if ($1 != $3) exit 1; d = $2 - $4; if (d < 0) d = -d; if (d > 1e-3 * $2) exit 1 }' "$work/out"; then
  ok "losses after a 2 -> 1 rank resume match the 2-rank run within 1e-3 relative"
else not_ok "losses after a 2 -> 1 rank resume"; fi

# SIGUSR1 to one rank only: all ranks checkpoint at the next step boundary and exit 3.
"${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/usr1" >"$work/out" 2>&1 &
mpirun_pid=$!
for _ in $(seq 600); do
  d=$(run_dir "$work/usr1"); [ -n "$d" ] && [ "$(wc -l <"$d/metrics.jsonl" 2>/dev/null)" -ge 30 ] 2>/dev/null && break
  sleep 0.05
done
pkill -USR1 -f -n "run.output_dir=$work/usr1"   # the newest process: one rank, not mpirun
wait $mpirun_pid
rc=$?
d=$(run_dir "$work/usr1")
[ $rc = 3 ] && grep -q '"status": "interrupted"' "$d/meta.json" && grep -q "stopped by a signal" "$work/out" \
  && ok "SIGUSR1 to one rank: checkpoint, status interrupted, exit 3" || not_ok "preemption (exit $rc)"
timeout 300 "${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/usr1" \
  >"$work/out" 2>&1 && ok "requeued run finishes" || not_ok "resume after preemption"
same_series "$ref2" "$d" "2 ranks, preempted + resumed"

# A damaged newest checkpoint is named and skipped; with on_corrupt: error the run stops, exit 2.
"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/corrupt" >"$work/out" 2>&1 &
kill_at_step "$work/corrupt" 45 || not_ok "the run never reached step 45"
d=$(run_dir "$work/corrupt")
newest=$(ls -d "$d"/checkpoints/step_*[0-9]/ | tail -1)
printf '\x55' | dd of="$newest/model.safetensors" bs=1 seek=4000 conv=notrunc status=none
"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/corrupt" --set checkpoint.on_corrupt=error \
  >"$work/out" 2>&1
rc=$?
[ $rc = 2 ] && grep -q "$(basename "$newest") is corrupt: model.safetensors does not match its SHA-256" "$work/out" \
  && ok "on_corrupt: error names the damaged file, exit 2" || not_ok "on_corrupt: error (exit $rc)"
"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/corrupt" >"$work/out" 2>&1 \
  && grep -q "$(basename "$newest") is corrupt" "$work/out" && ok "corrupt newest checkpoint reported and skipped" \
  || not_ok "fallback past a corrupt checkpoint"
same_series "$ref" "$d" "resumed from the previous valid checkpoint"

# Killed inside each stage of a save: whatever is left, resume: auto continues correctly.
for stage in after_files before_manifest after_manifest after_rename; do
  LMFORGE_FAULT_INJECT=$stage "$LMFORGE" train configs/tiny.yaml "${common[@]}" \
    --set "run.output_dir=$work/fault_$stage" >"$work/out" 2>&1
  rc=$?
  d=$(run_dir "$work/fault_$stage")
  valid=$(ls -d "$d"/checkpoints/step_*[0-9]/ 2>/dev/null | wc -l)
  "$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/fault_$stage" >"$work/out" 2>&1 \
    && [ $rc = 137 ] && ok "killed $stage (left $valid committed checkpoint(s)), resumed to the end" \
    || not_ok "fault at $stage (first exit $rc)"
  same_series "$ref" "$d" "after a kill $stage"
done

# A full disk during a save (each file limited to 1.5 MB; the optimizer state is 2.4 MB): the save
# fails cleanly, nothing looks committed, and the run continues from there after space returns.
bash -c 'trap "" XFSZ; ulimit -f 1500; exec "$@"' _ "$LMFORGE" train configs/tiny.yaml "${common[@]}" \
  --set "run.output_dir=$work/full" >"$work/out" 2>&1
rc=$?
d=$(run_dir "$work/full")
[ $rc = 1 ] && grep -q "checkpoint at step 10 failed" "$work/out" && [ -z "$(ls "$d/checkpoints" 2>/dev/null)" ] \
  && ok "disk full: exit 1, message, no checkpoint left behind" || not_ok "disk full (exit $rc)"
"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set "run.output_dir=$work/full" >"$work/out" 2>&1 \
  && ok "resumed after the disk-full failure" || not_ok "resume after disk full"
same_series "$ref" "$d" "after a failed save"

# runs list / show / diff: two runs differing in one --set show exactly that key.
short=(--set train.max_steps=5 --set "data.cache_dir=$work/cache" --set "run.output_dir=$work/pair")
"$LMFORGE" train configs/tiny.yaml "${short[@]}" >/dev/null 2>&1
"$LMFORGE" train configs/tiny.yaml "${short[@]}" --set optim.lr=0.002 >/dev/null 2>&1
# Which is which by content: two runs started within one second sort by their random suffix.
a=$(dirname "$(grep -l "lr: 0.003" "$work"/pair/tiny/*/config.yaml)") b=$(dirname "$(grep -l "lr: 0.002" "$work"/pair/tiny/*/config.yaml)")
"$LMFORGE" runs diff "$a" "$b" >"$work/out" 2>&1
if [ "$(sed -n '/^config/,/^$/p' "$work/out" | grep -c ':')" = 2 ] && grep -q "optim.lr: 0.003 vs 0.002" "$work/out"; then
  ok "runs diff shows exactly the one differing key"
else not_ok "runs diff"; fi
"$LMFORGE" runs list --output-dir "$work/pair" >"$work/out" 2>&1 && [ "$(grep -c completed "$work/out")" = 2 ] \
  && ok "runs list shows both runs" || not_ok "runs list"
"$LMFORGE" runs show "$(basename "$a")" --output-dir "$work/pair" >"$work/out" 2>&1 && grep -q "^final      step 5" "$work/out" \
  && ok "runs show by run id" || not_ok "runs show"

# The export's model card carries the run's lineage, and so does `lmforge export RUN`.
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["datasets"]["train"]["id"])' "$a/meta.json")
"$LMFORGE" export "$a" --out "$work/exported" >"$work/out" 2>&1
if grep -q "^## Lineage" "$a/export/README.md" && grep -q "training data: \`$id\`" "$a/export/README.md" \
  && grep -q "lr: 0.003" "$a/export/README.md" && grep -q "training data: \`$id\`" "$work/exported/README.md"; then
  ok "export model cards name the dataset id, code version and config"
else cp "$a/export/README.md" "$work/out"; not_ok "model card lineage"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
