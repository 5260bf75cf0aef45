#!/usr/bin/env bash
# tests/parallel/data_parallel_test.sh -- lmforge train under real mpirun: dp=2 against one
# process with the same global batch, ranks with different configs, a dp mismatch, a killed rank.
# Usage: data_parallel_test.sh PATH/TO/lmforge "MPIRUN AND ITS FLAGS"   (from the source root)
source "$(dirname "$0")/cli_common.sh" "$@"

# Same global batch: 1 rank x 2 micro-steps of 16 against 2 ranks x 1 micro-step of 16.
"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set train.grad_accum_steps=2 \
  --set "run.output_dir=$work/single" >"$work/out" 2>&1 && ok "single-process reference run" || not_ok "single run"
timeout 300 "${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/tiny.yaml "${common[@]}" \
  --set "run.output_dir=$work/dp2" >"$work/out" 2>&1 && ok "mpirun -np 2 run" || not_ok "dp=2 run"
single=$(ls -d "$work"/single/tiny/*/ | head -1) dp2=$(ls -d "$work"/dp2/tiny/*/ | head -1)
[ "$(ls -d "$work"/dp2/tiny/*/ | wc -l)" = 1 ] && ok "one run record for 2 ranks" || not_ok "expected one run dir"
grep -q '"world_size": 2' "$dp2/meta.json" && grep -q '"backend": "mpi"' "$dp2/meta.json" \
  && ok "meta.json records the world" || { cp "$dp2/meta.json" "$work/out"; not_ok "meta.json world"; }
# fp32, same data and weights, gradients summed in a different order: losses agree to ~1e-6 at
# first and drift by float rounding; 1e-3 relative over 20 steps is far below a wrong-batch
# error (which moves the loss by >1e-2 from the first step).
paste <(losses "$single") <(losses "$dp2") >"$work/out"
if [ "$(wc -l <"$work/out")" = 20 ] && awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-3 * $1) exit 1 }' "$work/out"; then
  ok "dp=2 losses match the single process within 1e-3 relative"
else not_ok "dp=2 losses differ"; fi
paste <(eval_losses "$single") <(eval_losses "$dp2") >"$work/out"
if [ "$(wc -l <"$work/out")" = 2 ] && awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-3 * $1) exit 1 }' "$work/out"; then
  ok "eval losses gathered over 2 ranks match"
else not_ok "eval losses differ"; fi

# Final weights: Adam divides by sqrt(v), so the ~1e-7 gradient-order differences move a
# weight by a small fraction of lr (3e-3) per step at most; 1e-3 over 20 steps still catches a
# wrong batch slice or a missed average, which move weights by ~lr from the first step on.
python3 tests/tools/compare_safetensors.py "$single/model.safetensors" "$dp2/model.safetensors" 1e-3 >"$work/out" 2>&1 \
  && ok "dp=2 final weights match the single process ($(cat "$work/out"))" || not_ok "dp=2 final weights differ"
if grep -q "step 20/20" "$dp2/logs/rank_0.log" && grep -q "step 20/20" "$dp2/logs/rank_1.log" \
  && grep -q "eval step 20" "$dp2/logs/rank_1.log"; then ok "every rank writes logs/rank_<r>.log"
else ls -R "$dp2" >"$work/out"; not_ok "rank logs missing"; fi

# ZeRO-1 trains the same model as plain data parallelism (same tolerance and reason as above).
timeout 300 "${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/tiny.yaml "${common[@]}" --set parallel.zero=1 \
  --set "run.output_dir=$work/zero" >"$work/out" 2>&1 && ok "mpirun -np 2 ZeRO-1 run" || not_ok "ZeRO-1 run"
zero=$(ls -d "$work"/zero/tiny/*/ | head -1)
paste <(losses "$dp2") <(losses "$zero") >"$work/out"
if [ "$(wc -l <"$work/out")" = 20 ] && awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-3 * $1) exit 1 }' "$work/out"; then
  ok "ZeRO-1 losses match plain data parallelism"
else not_ok "ZeRO-1 losses differ"; fi

# Ranks that resolved different configs refuse to start, every one of them, with exit 2.
timeout 120 "${MPIRUN[@]}" -np 1 "$LMFORGE" train configs/tiny.yaml --set optim.lr=0.001 "${common[@]}" \
  --set "run.output_dir=$work/mismatch" : -np 1 "$LMFORGE" train configs/tiny.yaml --set optim.lr=0.002 \
  "${common[@]}" --set "run.output_dir=$work/mismatch" >"$work/out" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "optim.lr: 0.001 vs 0.002" "$work/out" \
  && [ "$(grep -c 'resolved a different config' "$work/out")" = 2 ]; then
  ok "config mismatch: both ranks refuse, naming the key"
else not_ok "config mismatch (exit $rc)"; fi
[ ! -d "$work/mismatch" ] && ok "no run record for a refused start" || not_ok "refused start left a run dir"

timeout 120 "${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/tiny.yaml --set parallel.dp=3 "${common[@]}" \
  --set "run.output_dir=$work/dp3" >"$work/out" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "parallel.dp is 3 but 2 ranks were started" "$work/out" \
  && ok "parallel.dp mismatch is an error" || not_ok "dp mismatch (exit $rc)"

# A rank killed mid-run ends the whole job in bounded time.
start=$(date +%s)
timeout 120 "${MPIRUN[@]}" -np 2 bash -c '
  if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then (sleep 4; kill -9 $$) & fi
  exec "$0" "$@"' "$LMFORGE" train configs/tiny.yaml --set train.max_steps=100000 --set train.log_every=1000 \
  --set "data.cache_dir=$work/cache" --set "run.output_dir=$work/killed" >"$work/out" 2>&1
rc=$?
elapsed=$(($(date +%s) - start))
[ $rc -ne 0 ] && [ $rc -ne 124 ] && ok "killed rank ends the job (exit $rc after ${elapsed}s)" \
  || not_ok "killed rank: exit $rc after ${elapsed}s"

# A rank that hangs (stopped, not dead) makes the others abort after parallel.timeout_s.
start=$(date +%s)
timeout 120 "${MPIRUN[@]}" -np 2 bash -c '
  if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then (sleep 4; kill -STOP $$) & fi
  exec "$0" "$@"' "$LMFORGE" train configs/tiny.yaml --set train.max_steps=100000 --set train.log_every=1000 \
  --set parallel.timeout_s=3 --set "data.cache_dir=$work/cache" --set "run.output_dir=$work/hung" >"$work/out" 2>&1
rc=$?
elapsed=$(($(date +%s) - start))
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "did not complete within parallel.timeout_s = 3 s" "$work/out" \
  && ok "hung rank: the job aborts after the timeout (exit $rc after ${elapsed}s)" \
  || not_ok "hung rank: exit $rc after ${elapsed}s"

finish
