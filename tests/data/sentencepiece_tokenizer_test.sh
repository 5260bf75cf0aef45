#!/usr/bin/env bash
# tests/data/sentencepiece_tokenizer_test.sh -- lmforge reads tokenizer.model files itself (no
# libsentencepiece); its ids must equal spm_encode's for models spm_train builds here: Unigram
# with the default nmt_nfkc normalizer (precompiled charsmap), BPE with byte fallback, and
# identity normalization with user-defined symbols. Exit 77 (skipped) without spm_train/spm_encode
# (Debian package sentencepiece; launch/setup.sh installs it).
set -euo pipefail
lmforge=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
if ! command -v spm_train >/dev/null || ! command -v spm_encode >/dev/null; then
  echo "skipped: needs spm_train and spm_encode (apt-get install sentencepiece)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The corpus: the fortunes the quickstart trains on when present, else the small fixture corpus.
fortunes=/usr/share/games/fortunes
if [ -f "$fortunes/fortunes" ]; then
  cat "$fortunes"/{fortunes,computers,science} > "$work/all.txt"
  head -c 200000 "$work/all.txt" > "$work/corpus.txt"  # ~200 KB: spm_train takes a few seconds
else
  cp "$root/tests/fixtures/sentencepiece/corpus.txt" "$work/corpus.txt"
fi
train() {  # name, extra spm_train options
  local name=$1; shift
  spm_train --input="$work/corpus.txt" --model_prefix="$work/$name" --vocab_size=400 --hard_vocab_limit=false \
            --minloglevel=2 "$@" >"$work/$name.log" 2>&1 || { cat "$work/$name.log"; exit 1; }
}
train unigram_nfkc
train bpe_nfkc --model_type=bpe --byte_fallback=true
train unigram_identity --normalization_rule_name=identity --user_defined_symbols='<|user|>,<|bot|>' \
      --remove_extra_whitespaces=false

cat > "$work/texts.txt" <<'TEXTS'
The quick brown fox jumps over the lazy dog.
  Leading spaces,   runs   of spaces, and trailing ones.   
Full-width ＡＢＣ ｱｲｳ ﬁ ligature ① ² ㍻ and Ⅻ: NFKC folds these.
Unicode: naïve café Straße 日本語 한국어 🍕 👨‍👩‍👧 — “quotes” … done
Numbers 3.14159 1,000,000 and code: if (a != b) { return x**2; }
<|user|>What is 2+2?<|bot|>It is 4.<|user|> thanks
Unknown characters: ᚠᛇᚻ ꙮ 𓀀 and tab	separated	words
Pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious
TEXTS

failures=0
for model in unigram_nfkc bpe_nfkc unigram_identity; do
  expected=$(spm_encode --model="$work/$model.model" --output_format=id < "$work/texts.txt")
  got=$("$lmforge" tokenize --tokenizer "$work/$model.model" --file "$work/texts.txt" --lines)
  if [ "$got" != "$expected" ]; then
    echo "FAIL $model: lmforge differs from spm_encode"
    diff <(echo "$expected") <(echo "$got") | head -20
    failures=$((failures + 1))
  fi
done

# tokenizer.kind sentencepiece through a config; a config without tokenizer.path, and a corrupt
# .model, exit 2 naming the key or the file.
printf 'base: %s\nmodel: {vocab_size: 512}\ntokenizer: {kind: sentencepiece, path: %s}\n' \
       "$root/configs/tiny.yaml" "$work/unigram_nfkc.model" > "$work/config.yaml"
got=$("$lmforge" tokenize --config "$work/config.yaml" --text "Hello there, world")
expected=$(echo "Hello there, world" | spm_encode --model="$work/unigram_nfkc.model" --output_format=id)
[ "$got" = "$expected" ] || { echo "FAIL --config: $got vs $expected"; failures=$((failures + 1)); }
printf 'base: %s\ntokenizer: {kind: sentencepiece}\n' "$root/configs/tiny.yaml" > "$work/no_path.yaml"
set +e
out=$("$lmforge" tokenize --config "$work/no_path.yaml" --text hi 2>&1); rc=$?
set -e
if [ "$rc" -ne 2 ] || ! echo "$out" | grep -q "no_path.yaml:.*tokenizer.kind.*set tokenizer.path"; then
  echo "FAIL config without path: exit $rc: $out"; failures=$((failures + 1))
fi
head -c 100 "$work/bpe_nfkc.model" > "$work/corrupt.model"
set +e
out=$("$lmforge" tokenize --tokenizer "$work/corrupt.model" --text hi 2>&1); rc=$?
set -e
if [ "$rc" -ne 2 ] || ! echo "$out" | grep -q "corrupt.model: not a SentencePiece model"; then
  echo "FAIL corrupt model: exit $rc: $out"; failures=$((failures + 1))
fi
echo "3 models compared, $failures failures"
[ "$failures" -eq 0 ]
