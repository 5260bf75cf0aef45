#!/usr/bin/env bash
# tests/launch/lora_cli_test.sh -- a LoRA run on configs/tiny.yaml end to end: frozen base, small
# checkpoints, bit-exact resume, PEFT and merged exports checked by an independent Python reader,
# --adapter on score, peft.from, and exit 2 for bad adapters. Usage: lora_cli_test.sh path/to/lmforge
set -uo pipefail
bin=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
py=/usr/bin/python3

expect_exit() {  # expect_exit CODE PATTERN CMD... : exit code CODE and PATTERN in stderr
  local code=$1 pattern=$2
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  [ "$got" = "$code" ] || fail "exit $got (want $code): $* :: $(head -c 400 "$tmp/err")"
  grep -q -- "$pattern" "$tmp/err" || fail "stderr lacks '$pattern': $* :: $(head -c 600 "$tmp/err")"
}

common=(--set train.eval_every=0 --set data.eval=[] --set checkpoint.resume=never)
train() {  # train OUT_DIR CONFIG SETS... -> prints the run directory
  local out=$1 config=$2
  shift 2
  "$bin" train "$root/configs/$config" "${common[@]}" --set run.output_dir="$tmp/$out" "$@" 2>"$tmp/$out.err" ||
    fail "train $config $* exited $?: $(tail -3 "$tmp/$out.err")"
}

full=$(train full tiny.yaml --set train.max_steps=2)
lora=$(train lora lora_tiny.yaml --set train.max_steps=4 --set checkpoint.every_steps=2)
grep -q "peft lora on .*: [0-9]* of [0-9]* parameters trainable" "$tmp/lora.err" || fail "no trainable-parameter log line"

# Checkpoints: adapter tensors only, a reference to the base, and a small fraction of a full one.
ckpt="$lora/checkpoints/step_00000004"
[ -f "$ckpt/base.json" ] || fail "the LoRA checkpoint has no base.json"
full_bytes=$(du -bs "$full/checkpoints/step_00000002" | cut -f1)
lora_bytes=$(du -bs "$ckpt" | cut -f1)
$py -c "import sys; r = int(sys.argv[1]) / int(sys.argv[2]); print('checkpoint ratio %.3f' % r); assert r < 0.15, r" \
  "$lora_bytes" "$full_bytes" || fail "LoRA checkpoint $lora_bytes bytes vs full $full_bytes"

# Exports: the PEFT adapter and the merged HF directory, each from the run directory.
"$bin" export "$lora" --format peft --out "$tmp/peft" >/dev/null 2>"$tmp/e1" || fail "export peft: $(cat "$tmp/e1")"
"$bin" export "$lora" --format hf-merged --out "$tmp/merged" >/dev/null 2>"$tmp/e2" || fail "export merged: $(cat "$tmp/e2")"

# The independent reader: key names, shapes and config fields as HF PEFT writes them; the merged
# weights equal base + (alpha/r) B A; every other base weight is unchanged; the checkpoint holds only
# adapter tensors. fp32 on both sides, the reference sum in float64: 1e-6 bounds fp32 rounding of
# weights ~0.1 while a wrong scale (2x) or transpose fails by far more.
$py - "$lora" "$tmp/peft" "$tmp/merged" "$ckpt" <<'EOF' || fail "independent check of the exported adapter"
import json, struct, sys, array
run, peft, merged, ckpt = sys.argv[1:5]
def read(path):
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n]); header.pop("__metadata__", None)
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", (name, info["dtype"])
        b, e = info["data_offsets"]
        out[name] = (info["shape"], array.array("f", data[b:e]))
    return out
cfg = json.load(open(peft + "/adapter_config.json"))
for key, want in [("peft_type", "LORA"), ("task_type", "CAUSAL_LM"), ("r", 8), ("lora_alpha", 16), ("lora_dropout", 0.0),
                  ("use_rslora", False), ("use_dora", False), ("bias", "none"), ("modules_to_save", None)]:
    assert cfg[key] == want, (key, cfg[key])
assert sorted(cfg["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
assert cfg["base_model_name_or_path"].endswith("/base"), cfg["base_model_name_or_path"]
adapter, base, full = read(peft + "/adapter_model.safetensors"), read(run + "/base/model.safetensors"), read(merged + "/model.safetensors")
hidden, kv, ffn, r = 96, 48, 256, 8
shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (kv, hidden), "self_attn.v_proj": (kv, hidden),
          "self_attn.o_proj": (hidden, hidden), "mlp.gate_proj": (ffn, hidden), "mlp.up_proj": (ffn, hidden),
          "mlp.down_proj": (hidden, ffn)}
want = {}
for layer in range(2):
    for module, (out_f, in_f) in shapes.items():
        prefix = "base_model.model.model.layers.%d.%s" % (layer, module)
        want[prefix + ".lora_A.weight"] = [r, in_f]
        want[prefix + ".lora_B.weight"] = [out_f, r]
assert {k: v[0] for k, v in adapter.items()} == want, sorted(set(adapter) ^ set(want))
scale = cfg["lora_alpha"] / cfg["r"]
assert sorted(base) == sorted(full), "merged export and base name different tensors"
worst, changed = 0.0, 0
for name, (shape, w) in base.items():
    m = full[name][1]
    key = "base_model.model." + name[: -len(".weight")]
    if key + ".lora_A.weight" not in adapter:
        assert w == m, name + " is not adapted but changed"
        continue
    (_, a), (_, b) = adapter[key + ".lora_A.weight"], adapter[key + ".lora_B.weight"]
    out_f, in_f = shape
    for i in range(out_f):
        brow = b[i * r:(i + 1) * r]
        for j in range(in_f):
            delta = sum(brow[k] * a[k * in_f + j] for k in range(r))
            worst = max(worst, abs(w[i * in_f + j] + scale * delta - m[i * in_f + j]))
            changed += m[i * in_f + j] != w[i * in_f + j]
assert worst < 1e-6, "merged differs from base + (alpha/r) B A by %g" % worst
assert changed > 0, "training changed no merged weight"
names = read(ckpt + "/model.safetensors")
assert names and all(".lora_A." in n or ".lora_B." in n for n in names), sorted(names)[:3]
print("adapter: %d tensors, merge max error %.2e" % (len(adapter), worst))
EOF

# The base on disk is the base the run started from: its SHA-256 is still the one in base.json.
$py - "$lora" <<'EOF' || fail "base weights changed on disk"
import hashlib, json, os, sys
ref = json.load(open(sys.argv[1] + "/base.json"))
for name, sha in ref["files"].items():
    assert hashlib.sha256(open(os.path.join(ref["path"], name), "rb").read()).hexdigest() == sha, name
EOF

# Resume: a run stopped at step 2 and resumed from its checkpoint ends bit-identical to the straight run.
half=$(train half lora_tiny.yaml --set train.max_steps=2)
resumed=$(train resumed lora_tiny.yaml --set train.max_steps=4 --set checkpoint.resume="$half/checkpoints/step_00000002")
$py "$root/tests/tools/compare_safetensors.py" "$lora/model.safetensors" "$resumed/model.safetensors" 0 >/dev/null ||
  fail "resumed LoRA run differs from the straight run"

# --adapter: base + adapter scores as the merged export does (fp32; merge reassociates: 1e-5).
ids=84,104,101,32,99,97,116
a=$("$bin" score --model "$lora/base" --adapter "$tmp/peft" --ids $ids) || fail "score --adapter exited $?"
b=$("$bin" score --model "$tmp/merged" --ids $ids) || fail "score merged exited $?"
$py -c "import json,sys; a,b=json.loads(sys.argv[1]),json.loads(sys.argv[2]); assert abs(a['nll']-b['nll'])<1e-5, (a['nll'],b['nll'])" \
  "$a" "$b" || fail "base + adapter and the merged export score differently"
"$bin" generate --model "$lora/base" --adapter "$tmp/peft" --prompt-ids 84,104 --max-new-tokens 4 >/dev/null ||
  fail "generate --adapter exited $?"

# eval --adapter: the same numbers as the run's merged export (perplexity suite; 1e-4 relative bounds the
# merge's reassociation in fp32 over a whole text).
printf 'The quick brown fox jumps over the lazy dog.\nA second line of held-out text.\n' >"$tmp/heldout.txt"
printf 'suites:\n  - name: s\n    tasks:\n      - {name: text, data: %s, metrics: [bits_per_byte], window: 32}\n' \
  "$tmp/heldout.txt" >"$tmp/suite.yaml"
bpb() { sed -n "s/.*bits_per_byte *\([0-9.]*\).*/\1/p" | tail -1; }
a=$("$bin" eval --model "$lora/base" --adapter "$tmp/peft" --out "$tmp/eval_a" "$tmp/suite.yaml" | bpb)
b=$("$bin" eval --model "$lora/export" --out "$tmp/eval_b" "$tmp/suite.yaml" | bpb)
$py -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); assert abs(a-b)<=1e-4*b, (a,b)" "$a" "$b" ||
  fail "eval --adapter ($a) and the merged export ($b) differ"

# The decoder families through the CLI: a LoRA run with PEFT's default targets (peft.targets: [])
# exports an adapter named as the hub's modules are (phi3: the fused qkv_proj), which score
# --adapter loads onto the run's saved base.
for arch in qwen3 phi3 gemma2 gemma3; do
  run=$(train "family_$arch" lora_tiny.yaml --set model.arch=$arch --set train.max_steps=2 --set 'peft.targets=[]')
  "$bin" export "$run" --format peft --out "$tmp/peft_$arch" >/dev/null 2>"$tmp/e_$arch" ||
    fail "export peft of $arch: $(cat "$tmp/e_$arch")"
  want=$([ "$arch" = phi3 ] && echo '["qkv_proj"]' || echo '["q_proj", "v_proj"]')
  $py - "$tmp/peft_$arch" "$want" <<'EOF' || fail "$arch: the adapter's module names"
import json, struct, sys
adapter, want = sys.argv[1], json.loads(sys.argv[2])
cfg = json.load(open(adapter + "/adapter_config.json"))
assert sorted(cfg["target_modules"]) == want, cfg["target_modules"]
blob = open(adapter + "/adapter_model.safetensors", "rb").read()
names = set(json.loads(blob[8:8 + struct.unpack("<Q", blob[:8])[0]])) - {"__metadata__"}
for module in want:
    for part in ("lora_A", "lora_B"):
        assert "base_model.model.model.layers.0.self_attn.%s.%s.weight" % (module, part) in names, (module, sorted(names)[:4])
EOF
  "$bin" score --model "$run/base" --adapter "$tmp/peft_$arch" --ids 84,104,101 >/dev/null 2>&1 ||
    fail "$arch: score --adapter on the run's base"
done

# peft.from: training continues from an exported adapter (its config decides r, alpha, targets).
cont=$(train cont tiny.yaml --set train.max_steps=1 --set peft.from="$tmp/peft")
grep -q "peft lora" "$tmp/cont.err" || fail "peft.from run did not report its adapters"

# Bad input: exit 2, the cause named.
expect_exit 2 "peft.targets: 'qkv' matches no module; the model's linear modules: q_proj, k_proj" \
  "$bin" train "$root/configs/lora_tiny.yaml" "${common[@]}" --set run.output_dir="$tmp/bad" --set peft.targets=[qkv]
expect_exit 2 "peft.r" "$bin" config validate "$root/configs/lora_tiny.yaml" --set peft.r=0
expect_exit 2 "has no adapter" "$bin" export "$full" --format peft --out "$tmp/nope"
cp -r "$tmp/peft" "$tmp/wide"
$py - "$tmp/wide/adapter_config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1])); c["target_modules"] = ["query", "value"]; json.dump(c, open(sys.argv[1], "w"))
EOF
expect_exit 2 "'query' matches no module" "$bin" score --model "$lora/base" --adapter "$tmp/wide" --ids 1,2
expect_exit 2 "shape: model.layers.0.self_attn.q_proj.lora_A.weight is \[8, 96\] in the file, \[8, 32\]" \
  "$bin" score --model "$root/tests/fixtures/hf/llama_gqa" --adapter "$tmp/peft" --ids 1,2

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "lora cli: all checks passed"
