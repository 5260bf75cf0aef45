#!/usr/bin/env bash
# experiments/bench/lora_bench.sh -- LoRA (r=8, attention + MLP) against full fine-tuning of the same
# model, each mode in its own process (peak RSS is per process), alternating three times on a noisy
# machine; prints the medians (and the fastest step time) and LoRA/full ratios.
# Usage: lora_bench.sh [CONFIG] [STEPS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
config=${1:-configs/quickstart.yaml}
steps=${2:-10}
cd "$root"
"$root/launch/build.sh" lora_bench >/dev/null
out=$(mktemp)
for round in 1 2 3; do
  for mode in full lora; do "$root/build/lora_bench" "$mode" "$config" "$steps" | tee -a "$out"; done
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
med = {m: {k: statistics.median(r[k] for r in rows if r["mode"] == m)
           for k in ("trainable", "parameters", "checkpoint_bytes", "peak_rss_mb", "step_s")} for m in ("full", "lora")}
fastest = {m: min(r["step_s"] for r in rows if r["mode"] == m) for m in ("full", "lora")}
print("\nmode  trainable   checkpoint MB  peak RSS MB  step s (median, fastest)")
for m in ("full", "lora"):
    r = med[m]
    print(f"{m:5} {r['trainable']:10.0f}  {r['checkpoint_bytes'] / 1e6:13.2f}  {r['peak_rss_mb']:11.0f}  "
          f"{r['step_s']:6.3f} {fastest[m]:6.3f}")
f, l = med["full"], med["lora"]
print(f"lora/full: trainable {l['trainable'] / f['trainable']:.4f}, checkpoint {l['checkpoint_bytes'] / f['checkpoint_bytes']:.4f}, "
      f"peak RSS {l['peak_rss_mb'] / f['peak_rss_mb']:.3f}, step time {l['step_s'] / f['step_s']:.3f} "
      f"(fastest {fastest['lora'] / fastest['full']:.3f})")
PY
rm -f "$out"
