#!/usr/bin/env bash
# experiments/bench/tp_bench.sh -- tp_bench at tp = 1 and 2, full training and LoRA, in one round
# (same machine load), with the tp2 / tp1 step-time ratios. Results: experiments/bench/RESULTS.md.
# Usage: experiments/bench/tp_bench.sh build/tp_bench
set -eu
bench=${1:?usage: tp_bench.sh PATH/TO/tp_bench}
mpirun=(mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl_vader_single_copy_mechanism none)
ms() { "${mpirun[@]}" -np "$1" "$bench" $2 | tee -a /dev/stderr | grep -o '"step_ms_median":[0-9.]*' | cut -d: -f2; }
for mode in full lora; do
  arg=$([ $mode = lora ] && echo lora || true)
  one=$(ms 1 "$arg")
  two=$(ms 2 "$arg")
  awk -v m=$mode -v a="$one" -v b="$two" 'BEGIN { printf "%s: tp=1 %.0f ms, tp=2 %.0f ms, tp2/tp1 %.2f\n", m, a, b, b / a }'
done
