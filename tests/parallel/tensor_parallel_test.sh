#!/usr/bin/env bash
# tests/parallel/tensor_parallel_test.sh -- lmforge train under real mpirun with tensor
# parallelism: tp=2 (-np 2; llama, qwen3, phi3, gemma2) and dp=2 x tp=2 (-np 4) against one
# process with the same global batch; a tp=2 checkpoint resumed by one process; LoRA at tp=2
# (losses, checkpoint, PEFT export used by one process) with eval suites during training (the same
# results as tp=1); layouts that do not divide exit 2.
# Usage: tensor_parallel_test.sh PATH/TO/lmforge "MPIRUN AND ITS FLAGS"   (from the source root)
source "$(dirname "$0")/cli_common.sh" "$@"
run_dir() { ls -d "$1"/tiny/*/ 2>/dev/null | head -1; }
# fp32, same data and the same initial weights (tp=N slices the tp=1 init); only the order of
# the sums over split heads, ffn and vocab differs: ~1e-6 at first, drifting by float rounding.
# 1e-3 relative over 20 steps is far below a wrong shard or a missing reduction (>1e-2 at step 1).
agree() {  # $1 $2 files of numbers, $3 expected count
  paste "$1" "$2" >"$work/out"
  [ "$(wc -l <"$work/out")" = "$3" ] && awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-3 * $1) exit 1 }' "$work/out"
}

# The reference: one process, 2 micro-steps of 16 = a global batch of 32 sequences.
"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set train.grad_accum_steps=2 \
  --set "run.output_dir=$work/single" >"$work/out" 2>&1 && ok "single-process reference run" || not_ok "single run"
single=$(run_dir "$work/single")

# tp=2 on 2 ranks (dp 1): the same 2 micro-steps; checkpoints every 10 steps for the resume below.
timeout 300 "${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/tiny.yaml "${common[@]}" --set parallel.tp=2 \
  --set train.grad_accum_steps=2 --set checkpoint.every_steps=10 --set "run.output_dir=$work/tp2" >"$work/out" 2>&1 \
  && ok "mpirun -np 2 with parallel.tp=2" || not_ok "tp=2 run"
tp2=$(run_dir "$work/tp2")
agree <(losses "$single") <(losses "$tp2") 20 && ok "tp=2 losses match the single process within 1e-3 relative" \
  || not_ok "tp=2 losses differ"
agree <(eval_losses "$single") <(eval_losses "$tp2") 2 && ok "tp=2 eval losses match" || not_ok "tp=2 eval losses differ"
# Final weights gathered to full tensors: the same names and shapes as a tp=1 run. Adam
# normalises updates, so rounding-level gradient differences stay far below lr = 3e-3 per step.
python3 tests/tools/compare_safetensors.py "$single/model.safetensors" "$tp2/model.safetensors" 1e-3 >"$work/out" 2>&1 \
  && ok "tp=2 final weights are full tensors matching the single process ($(cat "$work/out"))" \
  || not_ok "tp=2 final weights differ"
python3 tests/tools/compare_safetensors.py "$single/export/model.safetensors" "$tp2/export/model.safetensors" 1e-3 \
  >"$work/out" 2>&1 && cmp -s "$single/export/config.json" "$tp2/export/config.json" \
  && ok "tp=2 HF export looks like the tp=1 one" || not_ok "tp=2 export differs"
grep -q '"tp": 2' "$tp2/meta.json" && ok "meta.json records tp" || { cp "$tp2/meta.json" "$work/out"; not_ok "meta tp"; }

# The decoder families: qwen3 (per-head q/k norms), phi3 (fused qkv_proj and gate_up_proj; 4 kv
# heads, as a fused qkv splits only then) and gemma2 (scaled embeddings, (1 + w) sandwich norms,
# GeGLU): tp=2 losses against one process, as for llama. Adam hides a gradient's scale, so the
# per-head norms' summed gradients are proven by TensorParallelModel.NewFamiliesMatchOneDevice.
for arch in qwen3 phi3 gemma2; do
  extra=(--set model.arch=$arch)
  [ "$arch" = phi3 ] && extra+=(--set model.n_kv_heads=4)
  "$LMFORGE" train configs/tiny.yaml "${common[@]}" "${extra[@]}" --set "run.output_dir=$work/${arch}_1" >"$work/out" 2>&1 \
    || not_ok "$arch single-process run"
  timeout 300 "${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/tiny.yaml "${common[@]}" "${extra[@]}" --set parallel.tp=2 \
    --set "run.output_dir=$work/${arch}_2" >"$work/out" 2>&1 || not_ok "$arch tp=2 run"
  agree <(losses "$(run_dir "$work/${arch}_1")") <(losses "$(run_dir "$work/${arch}_2")") 20 \
    && ok "$arch: tp=2 losses match the single process within 1e-3 relative" || not_ok "$arch: tp=2 losses differ"
done

# dp=2 x tp=2 on 4 ranks: one micro-step of 16 on each of 2 dp ranks = the same global batch.
timeout 300 "${MPIRUN[@]}" -np 4 "$LMFORGE" train configs/tiny.yaml "${common[@]}" --set parallel.tp=2 \
  --set "run.output_dir=$work/dp2tp2" >"$work/out" 2>&1 && ok "mpirun -np 4 with parallel.tp=2 (dp auto = 2)" \
  || not_ok "dp=2 x tp=2 run"
dp2tp2=$(run_dir "$work/dp2tp2")
agree <(losses "$single") <(losses "$dp2tp2") 20 && ok "dp=2 x tp=2 losses match the single process within 1e-3 relative" \
  || not_ok "dp=2 x tp=2 losses differ"
grep -q '"dp": 2' "$dp2tp2/meta.json" && ok "meta.json records dp 2" || not_ok "meta dp"

# A tp=2 checkpoint holds full tensors: one process resumes it (resharding to tp=1) and
# continues as the reference did.
ckpt="$tp2/checkpoints/step_00000010"
"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set train.grad_accum_steps=2 --set "checkpoint.resume=$ckpt" \
  --set "run.output_dir=$work/resumed" >"$work/out" 2>&1 && ok "one process resumes a tp=2 checkpoint" \
  || not_ok "resume of a tp=2 checkpoint"
resumed=$(run_dir "$work/resumed")
agree <(losses "$single" | tail -10) <(losses "$resumed") 10 \
  && ok "steps 11-20 after resuming at tp=1 match the reference" || not_ok "resumed losses differ"

# LoRA (configs/lora_tiny.yaml: adapters on every linear, column- and row-parallel) with the
# fixture eval suite (generation, scoring and perplexity) at each eval point: one process, then tp=2.
cp tests/fixtures/eval/qa.jsonl tests/fixtures/eval/choice.jsonl tests/fixtures/eval/proverbs.txt "$work/"
sed -n '/^suites:/,$p' tests/fixtures/eval/suite.yaml | sed 's/^/  /' >"$work/suites"
{ printf 'base: %s/configs/lora_tiny.yaml\neval:\n  max_batches: 4\n' "$PWD"; cat "$work/suites"; } >"$work/lora.yaml"
"$LMFORGE" train "$work/lora.yaml" "${common[@]}" --set train.grad_accum_steps=2 --set checkpoint.every_steps=10 \
  --set "run.output_dir=$work/lora1" >"$work/out" 2>&1 && ok "LoRA single-process reference run" || not_ok "LoRA single run"
lora1=$(ls -d "$work"/lora1/tiny-lora/*/ 2>/dev/null | head -1)
timeout 300 "${MPIRUN[@]}" -np 2 "$LMFORGE" train "$work/lora.yaml" "${common[@]}" --set parallel.tp=2 \
  --set train.grad_accum_steps=2 --set checkpoint.every_steps=10 --set "run.output_dir=$work/lora2" >"$work/out" 2>&1 \
  && ok "mpirun -np 2 LoRA with parallel.tp=2" || not_ok "LoRA tp=2 run"
lora2=$(ls -d "$work"/lora2/tiny-lora/*/ 2>/dev/null | head -1)
agree <(losses "$lora1") <(losses "$lora2") 20 && ok "LoRA tp=2 losses match the single process within 1e-3 relative" \
  || not_ok "LoRA tp=2 losses differ"
# The exported adapter: the same PEFT names and full shapes, values as the weights above (1e-3).
python3 tests/tools/compare_safetensors.py "$lora1/export/adapter/adapter_model.safetensors" \
  "$lora2/export/adapter/adapter_model.safetensors" 1e-3 >"$work/out" 2>&1 \
  && ok "tp=2 PEFT export has tp=1's layout and values ($(cat "$work/out"))" || not_ok "tp=2 PEFT export differs"
# Eval suite results: the same predictions; scores within 1e-4 relative (logits agree to ~1e-6).
python3 - "$lora1/eval/smoke" "$lora2/eval/smoke" >"$work/out" 2>&1 <<'PY' && ok "eval suites at tp=2 give tp=1's results (steps 10, 20)" || not_ok "tp=2 eval suite results differ"
import json, sys
def same(a, b, path):
    if isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (path, a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), (path, a.keys() ^ b.keys())
        for k in a: same(a[k], b[k], path + "/" + k)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)): same(x, y, "%s[%d]" % (path, i))
    else:
        assert a == b, (path, a, b)
for step in (10, 20):
    same(json.load(open("%s/%d.json" % (sys.argv[1], step))), json.load(open("%s/%d.json" % (sys.argv[2], step))), str(step))
PY
# The tp=2 adapter on one process: generate and score with --adapter on the run's saved base.
"$LMFORGE" score --model "$lora2/base" --adapter "$lora2/export/adapter" --ids 84,104,101,32,99 >"$work/out" 2>&1 \
  && "$LMFORGE" generate --model "$lora2/base" --adapter "$lora2/export/adapter" --prompt-ids 84,104 \
  --max-new-tokens 4 >>"$work/out" 2>&1 && ok "the tp=2 adapter loads with score/generate --adapter" \
  || not_ok "score/generate --adapter on the tp=2 export"
# A tp=2 LoRA checkpoint holds full adapter tensors: one process resumes it.
"$LMFORGE" train "$work/lora.yaml" "${common[@]}" --set train.grad_accum_steps=2 \
  --set "checkpoint.resume=$lora2/checkpoints/step_00000010" --set "run.output_dir=$work/lora_resumed" >"$work/out" 2>&1 \
  && ok "one process resumes a tp=2 LoRA checkpoint" || not_ok "resume of a tp=2 LoRA checkpoint"
agree <(losses "$lora1" | tail -10) <(losses "$(ls -d "$work"/lora_resumed/tiny-lora/*/ | head -1)") 10 \
  && ok "LoRA steps 11-20 after resuming at tp=1 match the reference" || not_ok "resumed LoRA losses differ"
# peft.from at tp=2: the adapter is applied to the whole model, then sharded.
timeout 120 "${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/lora_tiny.yaml "${common[@]}" --set parallel.tp=2 \
  --set train.max_steps=2 --set "peft.from=$lora2/export/adapter" --set "run.output_dir=$work/lora_from" >"$work/out" 2>&1 \
  && grep -q "peft lora" "$work/out" && ok "peft.from continues an adapter at tp=2" || not_ok "peft.from at tp=2"
"$LMFORGE" config validate configs/lora_tiny.yaml --set peft.method=dora --set parallel.tp=2 >"$work/out" 2>&1
rc=$?
[ $rc = 2 ] && grep -q "peft.method dora with parallel.tp 2 is not supported" "$work/out" \
  && ok "DoRA with tp: exit 2 naming both keys" || not_ok "dora with tp (exit $rc)"

# Layouts that do not divide: exit 2 before start-up, naming the keys and numbers.
"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set parallel.tp=4 --set "run.output_dir=$work/bad" >"$work/out" 2>&1
rc=$?
[ $rc = 2 ] && grep -q "model.n_kv_heads 2 (key/value heads) is not divisible by parallel.tp 4" "$work/out" \
  && ok "kv heads not divisible by tp: exit 2 naming them" || not_ok "tp=4 layout (exit $rc)"
timeout 120 "${MPIRUN[@]}" -np 2 "$LMFORGE" train configs/tiny.yaml "${common[@]}" --set parallel.tp=2 \
  --set parallel.dp=2 --set "run.output_dir=$work/bad" >"$work/out" 2>&1
rc=$?
[ $rc = 2 ] && grep -q "parallel.dp x parallel.tp is 2 x 2 = 4 but 2 ranks were started" "$work/out" \
  && ok "dp x tp not the world size: exit 2" || not_ok "dp x tp mismatch (exit $rc)"
"$LMFORGE" train configs/tiny.yaml "${common[@]}" --set parallel.tp=2 --set parallel.zero=1 \
  --set "run.output_dir=$work/bad" >"$work/out" 2>&1
rc=$?
[ $rc = 2 ] && grep -q "parallel.zero 1 with parallel.tp 2 is not supported" "$work/out" \
  && ok "ZeRO-1 with tp: exit 2" || not_ok "zero with tp (exit $rc)"
[ ! -d "$work/bad" ] && ok "no run record for a refused start" || not_ok "refused start left a run dir"

finish
