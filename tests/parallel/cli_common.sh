# tests/parallel/cli_common.sh -- sourced by the multi-rank CLI scripts (data_parallel_test.sh,
# tensor_parallel_test.sh): arguments, a scratch directory, TAP-style results, metrics readers.
# Usage inside a script: source "$(dirname "$0")/cli_common.sh" "$@"
set -u
LMFORGE=${1:?usage: $(basename "$0") LMFORGE MPIRUN}
read -r -a MPIRUN <<<"${2:?usage: $(basename "$0") LMFORGE MPIRUN}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; sed 's/^/    /' "$work/out" | tail -20; }
# Every run of these scripts: 20 steps, a metric row per step, two evals.
common=(--set train.max_steps=20 --set train.log_every=1 --set train.eval_every=10 --set "data.cache_dir=$work/cache")
losses() { grep -o '"loss":[-0-9.e]*' "$1"/metrics.jsonl | cut -d: -f2; }
eval_losses() { grep -o '"eval_loss":[-0-9.e]*' "$1"/metrics.jsonl | cut -d: -f2; }
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
