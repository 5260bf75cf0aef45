# tests/launch/tap.sh -- shared helpers of the CLI test scripts (sourced): ok / not_ok counters and
# expect, which checks the exit code ($rc) and output ($work/out) of the last `run`.
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; sed 's/^/    /' "$work/out" | head -20; }
expect() {  # expect NAME CODE PATTERN...
  local name=$1 code=$2; shift 2
  if [ "$rc" != "$code" ]; then not_ok "$name (exit $rc, wanted $code)"; return; fi
  for pat in "$@"; do
    if ! grep -qF -- "$pat" "$work/out"; then not_ok "$name (missing: $pat)"; return; fi
  done
  ok "$name"
}
