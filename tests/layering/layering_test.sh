#!/usr/bin/env bash
# tests/layering/layering_test.sh -- the house rules that keep the layers apart, checked over the
# sources: includes go down only (core < parallel < data < trainer < experiments < launch), and
# no model-family name is spelled outside its family file.
set -u
cd "$(dirname "$0")/../.."
layers=(core parallel data trainer experiments launch)
level() { local i; for i in "${!layers[@]}"; do [ "${layers[$i]}" = "$1" ] && echo "$i" && return; done; echo -1; }

failures=0
count=0
# 1. Every project include of a library or CLI file names its own layer or one below it.
while IFS= read -r line; do
  file=${line%%:*}
  rest=${line#*:}; rest=${rest#*:}
  target=$(printf '%s' "$rest" | sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]+"([a-z_]+)\/.*/\1/')
  from=${file%%/*}
  count=$((count + 1))
  if [ "$(level "$target")" -gt "$(level "$from")" ]; then
    echo "FAIL: $file includes $target/ (above $from/): ${rest}"
    failures=$((failures + 1))
  fi
done < <(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"(core|parallel|data|trainer|experiments|launch)/' \
           --include=*.h --include=*.cpp "${layers[@]}" | grep -v '^experiments/bench/')
# Within trainer/, model code never reaches parallel/ (parallelism is attached from outside).
while IFS= read -r line; do
  echo "FAIL: model code includes parallel/: $line"
  failures=$((failures + 1))
done < <(grep -rnE '#[[:space:]]*include[[:space:]]+"(parallel/|trainer/(parallelize|tp_layers|strategy|peft/))' trainer/models)

# 2. Arch names and HF model types appear as string literals only in the family files
#    (trainer/models/<family>.cpp). Benchmarks and tests choose a model as a config would.
families=$(sed -nE 's/^#define LMFORGE_MODEL_FAMILIES\(X\) (.*)/\1/p' trainer/models/registry.cpp | grep -oE 'X\([a-z0-9_]+\)' | sed -E 's/X\((.*)\)/\1/')
names=$(for f in $families; do sed -nE 's/.*f\.(arch|hf_model_types) = \{?([^;}]*)\}?;.*/\2/p' "trainer/models/$f.cpp"; done |
        grep -oE '"[a-z0-9_]+"' | sort -u | tr '\n' '|' | sed 's/|$//')
[ -n "$names" ] || { echo "FAIL: found no family names in trainer/models/*.cpp"; exit 1; }
family_files=$(for f in $families; do printf 'trainer/models/%s.cpp\n' "$f"; done)
# data/gguf_tokenizer.cpp spells llama.cpp's tokenizer kinds ("gpt2": byte-level BPE, "llama":
# SentencePiece) and pre-tokenizer names ("qwen2"): GGUF's vocabulary for tokenizers, not families.
literals=$(grep -rnE "$names" --include=*.h --include=*.cpp "${layers[@]}" | grep -v '^experiments/bench/' |
           grep -vF "$family_files" | grep -v '^data/gguf_tokenizer\.cpp:')
literal_count=0
if [ -n "$literals" ]; then
  literal_count=$(printf '%s\n' "$literals" | wc -l)
  printf '%s\n' "$literals" | sed 's/^/FAIL: family name outside its family file: /'
  failures=$((failures + literal_count))
fi

echo "checked $count project includes across ${layers[*]}; family names ${names//|/, }: $literal_count literal(s) outside trainer/models/{$(echo $families | tr ' ' ',')}.cpp"
[ "$failures" -eq 0 ] && echo "layering ok" && exit 0
echo "$failures layering violation(s)"
exit 1
