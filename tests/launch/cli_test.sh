#!/usr/bin/env bash
# tests/launch/cli_test.sh -- the lmforge CLI end to end: exit codes and file:line:col messages for
# bad configs, a tiny training run and its run record, same-seed determinism, bad data paths.
# Usage: cli_test.sh PATH/TO/lmforge   (ctest passes it; run from the source root)
set -u
LMFORGE=${1:?usage: cli_test.sh PATH/TO/lmforge}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/tap.sh"
# the last command's exit code and output in $work/out
run() { "$LMFORGE" "$@" >"$work/out" 2>&1; rc=$?; }

cat >"$work/typo.yaml" <<'YAML'
base: BASE
train:
  max_stpes: 10
YAML
sed -i "s#BASE#$PWD/configs/tiny.yaml#" "$work/typo.yaml"
run config validate "$work/typo.yaml"
expect "misspelled key" 2 "$work/typo.yaml:3:3: error: train.max_stpes: unknown key 'max_stpes'; did you mean 'max_steps'?"

cp configs/tiny.yaml "$work/dup.yaml"
printf 'run:\n  name: again\n' >>"$work/dup.yaml"
run config validate "$work/dup.yaml"
line=$(grep -n '^run:' "$work/dup.yaml" | tail -1 | cut -d: -f1)
expect "duplicate key" 2 "$work/dup.yaml:$line:1: error: run: duplicate key (first defined at line"

sed 's/  seq_len: 64/  seq_len: sixty-four/' configs/tiny.yaml >"$work/type.yaml"
line=$(grep -n 'sixty-four' "$work/type.yaml" | cut -d: -f1)
run train "$work/type.yaml"
expect "string where a number belongs" 2 "$work/type.yaml:$line:12: error: train.seq_len: expected an integer, got 'sixty-four'"

run config validate configs/tiny.yaml --set train.max_steps=0 --set optim.lrr=1
expect "bad --set values are all reported" 2 "<--set #1>:1:17: error: train.max_steps: value 0 out of range" \
  "<--set #2>:1:7: error: optim.lrr: unknown key 'lrr'; did you mean 'lr'?"

run config show configs/quickstart.yaml --set optim.lr=0.002
expect "config show prints the resolved config" 0 "lr: 0.002" "min_lr_ratio: 0.1" "kind: byte"

run train configs/tiny.yaml --set 'data.train=/nonexistent/corpus.txt' --set "run.output_dir=$work/runs"
expect "missing data file is named" 2 "data.train: no file matches '/nonexistent/corpus.txt'"
[ ! -e "$work/runs/tiny" ] && ok "no run directory for a run that never started" || not_ok "run dir created for bad input"

run train configs/tiny.yaml --set nosuch=1
expect "unknown section" 2 "<--set #1>:1:1: error: nosuch: unknown section 'nosuch'"

run frobnicate
expect "unknown sub-command" 2

# A diverging run stops with exit 1 before training on garbage, and says so in meta.json.
run train configs/tiny.yaml --set optim.lr=1e30 --set schedule.warmup_steps=0 --set train.max_steps=20 \
  --set "run.output_dir=$work/diverge" --set "data.cache_dir=$work/cache"
expect "non-finite loss stops the run" 1 "not finite, stopping before the update"
grep -q '"status": "failed"' "$work"/diverge/tiny/*/meta.json && ok "diverged run recorded as failed" \
  || not_ok "diverged run not recorded as failed"

# A real run: the tiny config for 60 steps, twice with the same seed.
losses() { grep -o '"loss":[-0-9.e]*' "$1/metrics.jsonl" | cut -d: -f2; }
for i in 1 2; do
  "$LMFORGE" train configs/tiny.yaml --set train.max_steps=60 --set "run.output_dir=$work/runs" \
    --set "data.cache_dir=$work/cache" >"$work/out" 2>&1
  rc=$?
  expect "tiny training run $i" 0 "step 60/60"
done
dirs=($(ls -d "$work"/runs/tiny/*/))
if [ ${#dirs[@]} -eq 2 ]; then ok "two runs, two run ids"; else not_ok "expected 2 run dirs, got ${#dirs[@]}"; fi
d=${dirs[0]%/}
for f in config.yaml meta.json metrics.jsonl model.safetensors; do
  [ -s "$d/$f" ] && ok "run dir has $f" || not_ok "run dir lacks $f"
done
grep -q '"status": "completed"' "$d/meta.json" && grep -q '"git_commit"' "$d/meta.json" && grep -q '"libtorch"' "$d/meta.json" \
  && ok "meta.json: completed, code and library versions" || { cp "$d/meta.json" "$work/out"; not_ok "meta.json contents"; }
grep -q '"eval_loss"' "$d/metrics.jsonl" && grep -q '"tokens_per_s"' "$d/metrics.jsonl" && grep -q '"grad_norm"' "$d/metrics.jsonl" \
  && ok "metrics.jsonl has train and eval rows" || { cp "$d/metrics.jsonl" "$work/out"; not_ok "metrics.jsonl rows"; }
first=$(losses "$d" | head -1) last=$(losses "$d" | tail -1)
# "Well below": byte-level loss starts near ln(258) = 5.55; 60 steps must cut it by a quarter.
if awk -v f="$first" -v l="$last" 'BEGIN { exit !(l < 0.75 * f) }'; then ok "loss falls ($first -> $last)"
else losses "$d" >"$work/out"; not_ok "loss did not fall enough ($first -> $last)"; fi
if [ "$(losses "${dirs[0]}")" = "$(losses "${dirs[1]}")" ] && [ -n "$(losses "${dirs[0]}")" ]; then
  ok "same seed, identical loss sequence"
else paste <(losses "${dirs[0]}") <(losses "${dirs[1]}") >"$work/out"; not_ok "loss sequences differ"; fi
"$LMFORGE" config validate "$d/config.yaml" >"$work/out" 2>&1 && ok "the recorded config validates" || not_ok "recorded config invalid"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
