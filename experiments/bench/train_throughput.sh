#!/usr/bin/env bash
# experiments/bench/train_throughput.sh -- lmforge's training step against the same model and
# batch as a plain PyTorch loop (Debian's python3-torch at /usr/bin/python3: the same LibTorch build), run back to
# back, alternating, so the ratio holds on a noisy machine. Usage: train_throughput.sh [CONFIG] [STEPS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
config=${1:-configs/quickstart.yaml}
steps=${2:-20}
cd "$root"
"$root/launch/build.sh" train_throughput >/dev/null
out=$(mktemp)
for round in 1 2; do
  "$root/build/train_throughput" "$config" "$steps" | tee -a "$out"
  /usr/bin/python3 "$root/experiments/bench/train_throughput.py" "$config" "$steps" 2 | tee -a "$out"
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("\nprecision  lmforge tok/s  pytorch tok/s  ratio  lmforge MFU")
for p in ("fp32", "bf16"):
    ours = statistics.median(r["tokens_per_s"] for r in rows if r["impl"] == "lmforge" and r["precision"] == p)
    base = statistics.median(r["tokens_per_s"] for r in rows if r["impl"] == "pytorch" and r["precision"] == p)
    mfu = statistics.median(r["mfu"] for r in rows if r["impl"] == "lmforge" and r["precision"] == p)
    print(f"{p:9}  {ours:13.0f}  {base:13.0f}  {ours / base:5.2f}  {mfu:11.1%}")
PY
rm -f "$out"
