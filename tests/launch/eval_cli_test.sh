#!/usr/bin/env bash
# tests/launch/eval_cli_test.sh -- evaluation end to end: eval.suites during training (result
# files, metrics.jsonl, TensorBoard), `lmforge eval` on a trained run and on its 1-step base,
# gates, 1 vs 2 ranks, bad input (exit 2 with file:line), `runs diff` and `report --png`.
# Usage: eval_cli_test.sh PATH/TO/lmforge "MPIRUN LINE"   (ctest passes both; run from the source root)
set -u
LMFORGE=${1:?usage: eval_cli_test.sh PATH/TO/lmforge MPIRUN}
MPIRUN=${2:-mpirun --allow-run-as-root --oversubscribe --bind-to none}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/tap.sh"
# run CMD... -- the exit code in $rc and the output in $work/out, for expect
run() { "$@" >"$work/out" 2>&1; rc=$?; }
json() { /usr/bin/python3 -c "import json,sys; print($2)" <"$1"; }  # json FILE EXPR-over-j

cp tests/fixtures/eval/qa.jsonl tests/fixtures/eval/choice.jsonl tests/fixtures/eval/proverbs.txt \
   tests/fixtures/eval/suite.yaml "$work/"
cat >"$work/train.yaml" <<YAML
base: $PWD/configs/tiny.yaml
run: {name: evaltest, output_dir: $work/runs}
train: {max_steps: 40, eval_every: 20, log_every: 10}
logging: {tensorboard: true}
eval:
  suites:
    - name: held
      tasks:
        - name: proverbs
          data: proverbs.txt
          metrics: [bits_per_byte, perplexity]
          window: 32
YAML

# --- periodic evaluation during training ---------------------------------------------------
run "$LMFORGE" train "$work/train.yaml"
trained=$(tail -1 "$work/out")
expect "train with eval.suites" 0 "$work/runs/evaltest/"
if [ -f "$trained/eval/held/20.json" ] && [ -f "$trained/eval/held/40.json" ] &&
   [ "$(grep -c '"eval/held/proverbs/bits_per_byte"' "$trained/metrics.jsonl")" = 2 ]; then
  ok "eval/<suite>/<step>.json at each eval point, and rows in metrics.jsonl"
else
  not_ok "eval results of the training run"
fi
if grep -qF "| held/proverbs/bits_per_byte | " "$trained/export/README.md"; then
  ok "the model card carries the last eval suite results"
else
  not_ok "model card eval results"
fi
events=$(ls "$trained"/tensorboard/events.out.tfevents.* 2>/dev/null | head -1)
run /usr/bin/python3 tests/tools/read_tfevents.py "$events"
expect "TensorBoard events parse (lengths and CRCs) and carry the eval scalars" 0 '"eval/held/proverbs/bits_per_byte"' '"loss"'

run "$LMFORGE" train "$work/train.yaml" --set run.name=evalbase --set train.max_steps=1
base=$(tail -1 "$work/out")
expect "a 1-step base run" 0 "$work/runs/evalbase/"

# --- lmforge eval: fine-tuned vs base, gates -----------------------------------------------
run "$LMFORGE" eval --model "$trained" "$work/suite.yaml"
expect "eval a run" 0 "suite smoke  step 40" "proverbs" "accuracy"
result="$trained/eval/smoke/40.json"
if [ "$(json "$result" "all('prediction' in e and 'reference' in e for e in json.load(sys.stdin)['tasks']['qa']['examples'])")" = True ] &&
   [ "$(json "$result" "len(json.load(sys.stdin)['tasks']['proverbs']['dataset_sha256'])")" = 64 ]; then
  ok "result file: every prediction next to its reference, dataset SHA-256"
else
  not_ok "result file contents"
fi
run "$LMFORGE" eval --model "$base" "$work/suite.yaml"
trained_bpb=$(json "$result" "json.load(sys.stdin)['tasks']['proverbs']['metrics']['bits_per_byte']")
base_bpb=$(json "$base/eval/smoke/1.json" "json.load(sys.stdin)['tasks']['proverbs']['metrics']['bits_per_byte']")
if /usr/bin/python3 -c "import sys; sys.exit(0 if $trained_bpb < $base_bpb - 0.1 else 1)"; then
  ok "the trained model beats its base: $trained_bpb vs $base_bpb bits per byte"
else
  not_ok "trained $trained_bpb vs base $base_bpb bits per byte"
fi
run "$LMFORGE" eval --model "$trained" "$work/suite.yaml" --out "$work/gated" --gate "bits_per_byte<=$base_bpb"
expect "gate met: exit 0" 0 "gate bits_per_byte<=$base_bpb: passed"
run "$LMFORGE" eval --model "$base" "$work/suite.yaml" --out "$work/gated" --gate "bits_per_byte<=$trained_bpb"
expect "gate missed: exit 1" 1 "gate bits_per_byte<=$trained_bpb: MISSED (eval/smoke/proverbs/bits_per_byte = "

run "$LMFORGE" eval --model "$trained" "$work/suite.yaml" --out "$work/cmp" --compare "$base"
expect "--compare prints base and fine-tune with the change" 0 "A: $base" "B: $trained" "eval/smoke/proverbs/bits_per_byte"
if grep "eval/smoke/proverbs/bits_per_byte" "$work/out" | tail -1 | grep -q ' -[0-9]'; then
  ok "--compare: the fine-tune lowers bits per byte"
else
  not_ok "--compare change column"
fi

# --- 1 vs 2 data-parallel ranks ------------------------------------------------------------
# 1 and 2 ranks run with different thread counts, so LibTorch accumulates each window's and
# choice's fp32 log-probabilities in a different order: over these fixtures (139 tokens in 32-token
# windows, choices of a few tokens) that moves a number by ~1e-7 relative (seen: -15.768523456 vs
# -15.768519393, 2.6e-7), and a log-prob near 0 by ~1e-6 absolute, since fp32 log_softmax errs by
# eps times the logits (~10), not the result. So floats must agree within 1e-5 relative with a
# 1e-5 absolute floor, >= 10x that noise (the case seen uses 3% of it); everything else (strings,
# predictions, ids, integer counts, keys, example order) must be equal exactly. A wrong aggregation
# is far bigger: a metric summed over 2 ranks instead of averaged is off by 100%, a dropped example
# or window moves it by ~1/n (n <= 5 here) and changes the examples array and the integer counts.
compare="/usr/bin/python3 tests/tools/compare_json_numbers.py"
tolerance="1e-5 1e-5"
run "$LMFORGE" eval --model "$trained" "$work/suite.yaml" --out "$work/np1"
run $MPIRUN -np 2 "$LMFORGE" eval --model "$trained" "$work/suite.yaml" --out "$work/np2"
if [ "$rc" = 0 ]; then
  run $compare "$work/np1/eval/smoke/40.json" "$work/np2/eval/smoke/40.json" $tolerance
  expect "1 and 2 ranks write the same results (floats within 1e-5 relative)" 0 "agree"
  sed 's/^/    /' "$work/out"
else
  not_ok "1 vs 2 ranks (exit $rc)"
fi
# The comparison can fail: each wrong aggregation, planted in a copy of the 1-rank result, is reported.
perturb() {  # perturb PYTHON-STATEMENT-over-j -- the 1-rank result with the statement applied, in $work/bad.json
  /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); $1; json.dump(j, open(sys.argv[2], 'w'))" \
    "$work/np1/eval/smoke/40.json" "$work/bad.json"
}
while IFS='|' read -r what statement where; do
  perturb "$statement"
  run $compare "$work/np1/eval/smoke/40.json" "$work/bad.json" $tolerance
  expect "the 1 vs 2 ranks comparison fails on $what" 1 "$where"
done <<'CASES'
a metric summed over 2 ranks|j['tasks']['proverbs']['metrics']['bits_per_byte'] *= 2|$.tasks.proverbs.metrics.bits_per_byte:
a token count doubled|j['tasks']['proverbs']['tokens'] *= 2|$.tasks.proverbs.tokens:
a count off by one|j['tasks']['proverbs']['windows'] += 1|$.tasks.proverbs.windows:
an example dropped|j['tasks']['qa']['examples'].pop()|$.tasks.qa.examples: array of 5 vs 4 items
examples out of order|e=j['tasks']['choices']['examples']; e[0], e[1] = e[1], e[0]|$.tasks.choices.examples[0].index:
a prediction changed|j['tasks']['qa']['examples'][0]['prediction'] += 'x'|$.tasks.qa.examples[0].prediction:
a choice log-prob 1e-3 off|j['tasks']['choices']['examples'][0]['choice_logprobs'][0] -= 1e-3|$.tasks.choices.examples[0].choice_logprobs[0]:
a key missing|del j['tasks']['proverbs']['bytes']|$.tasks.proverbs: keys
CASES
perturb "j['tasks']['proverbs']['nll'] *= 1 + 1e-7"
run $compare "$work/np1/eval/smoke/40.json" "$work/bad.json" $tolerance
expect "the 1 vs 2 ranks comparison passes a float 1e-7 relative off" 0 "agree"

run $MPIRUN -np 2 "$LMFORGE" train "$work/train.yaml" --set run.name=evaldp --set train.max_steps=4 \
  --set train.eval_every=2
dp_run=$(tail -1 "$work/out")
if [ "$rc" = 0 ] && [ -f "$dp_run/eval/held/2.json" ] && [ -f "$dp_run/eval/held/4.json" ]; then
  ok "eval.suites during 2-rank training"
else
  not_ok "eval.suites during 2-rank training (exit $rc)"
fi

# --- bad input -----------------------------------------------------------------------------
printf '{"question": "a", "answer": "b"}\n{"question": "c", "answer"\n' >"$work/broken.jsonl"
sed 's/data: qa.jsonl/data: broken.jsonl/' "$work/suite.yaml" >"$work/broken.yaml"
run "$LMFORGE" eval --model "$trained" "$work/broken.yaml"
expect "malformed line: file and line, exit 2" 2 "$work/broken.jsonl:2: malformed JSON line"
sed 's/metrics: \[accuracy\]/metrics: [acuracy]/' "$work/suite.yaml" >"$work/metric.yaml"
line=$(grep -n 'acuracy' "$work/metric.yaml" | cut -d: -f1)
run "$LMFORGE" eval --model "$trained" "$work/metric.yaml"
expect "unknown metric lists the available ones, exit 2" 2 "$work/metric.yaml:$line:" \
  "unknown metric 'acuracy'; available: accuracy, bits_per_byte, bleu, exact_match, f1, perplexity, rouge_l"
sed 's/A:", response/A: {hint}", response/' "$work/suite.yaml" >"$work/field.yaml"
run "$LMFORGE" eval --model "$trained" "$work/field.yaml"
expect "missing template field named, exit 2" 2 "$work/qa.jsonl:1: template 'qa' needs field 'hint'"
run "$LMFORGE" eval --model "$trained" "$work/suite.yaml" --adapter "$work"
expect "--adapter on a directory that is no adapter: exit 2, named" 2 "$work"
run "$LMFORGE" eval --model "$trained" "$work/suite.yaml" --gate "bits_per_byte=<1"
expect "malformed gate, exit 2" 2 "expected METRIC>=VALUE"

# --- comparison and report -----------------------------------------------------------------
run "$LMFORGE" runs diff "$base" "$trained"
expect "runs diff shows eval results side by side" 0 "eval (last results):" "eval/smoke/proverbs/bits_per_byte" "eval_loss"
run "$LMFORGE" report "$base" "$trained" --out "$work/report/r.html" --png
expect "report with PNGs" 0 "$work/report/r.html" "$work/report/r_loss.png"
if grep -q '<polyline' "$work/report/r.html" && ! grep -q '<script' "$work/report/r.html" &&
   [ "$(head -c 4 "$work/report/r_loss.png" | tail -c 3)" = PNG ]; then
  ok "report: inline SVG curves, no scripts, PNG files"
else
  not_ok "report contents"
fi
chrome=$(command -v chromium chromium-headless-shell chrome-headless-shell 2>/dev/null | head -1)
if [ -n "$chrome" ]; then
  run "$chrome" --headless --no-sandbox --disable-gpu --window-size=1400,1000 \
    --screenshot="$work/report/shot.png" "file://$work/report/r.html"
  run /usr/bin/python3 tests/tools/png_colours.py "$work/report/shot.png"
  expect "headless Chromium renders coloured curves" 0 "curve pixels"
else
  echo "skip - headless Chromium not installed (apt-get install chromium): report checked structurally"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
