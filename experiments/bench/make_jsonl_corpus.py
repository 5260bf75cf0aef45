#!/usr/bin/env python3
# experiments/bench/make_jsonl_corpus.py -- a deterministic English JSONL corpus of a given size for
# prepare_bench.sh: each document a run of 30..600 consecutive words of Debian's fortunes from a
# seeded random start (real word statistics, ~1.7 KB a document, duplicates rare).
# Usage: make_jsonl_corpus.py OUT.jsonl BYTES [SEED]
import glob
import json
import random
import sys

out, size = sys.argv[1], int(float(sys.argv[2]))
rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 1234)
words = []
for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
    if path.endswith((".dat", ".u8")):
        continue
    try:
        with open(path, encoding="utf-8", errors="ignore") as f:
            words += f.read().split()
    except IsADirectoryError:
        pass
written = 0
with open(out, "w", encoding="utf-8") as f:
    while written < size:
        lines = []
        for _ in range(1000):
            n = rng.randint(30, 600)
            start = rng.randrange(len(words) - n)
            lines.append(json.dumps({"text": " ".join(words[start:start + n])}) + "\n")
        block = "".join(lines)
        f.write(block)
        written += len(block.encode("utf-8"))
