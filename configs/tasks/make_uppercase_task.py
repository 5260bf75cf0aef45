#!/usr/bin/env python3
# configs/tasks/make_uppercase_task.py -- writes the quickstart's instruction task: "upper-case these
# words", whose answers are checked exactly. Words come from the fortunes corpus; seeded, so every
# machine writes the same files. Usage: make_uppercase_task.py OUT_DIR [N_TRAIN] [N_EVAL]
import json
import random
import re
import sys
from pathlib import Path

out = Path(sys.argv[1])
n_train = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
n_eval = int(sys.argv[3]) if len(sys.argv) > 3 else 200
text = Path("/usr/share/games/fortunes/wisdom").read_text(encoding="utf-8", errors="replace")
words = sorted({w.lower() for w in re.findall(r"\b[A-Za-z]{3,7}\b", text)})
rng = random.Random(20261123)
rng.shuffle(words)


def example(pool):
    chosen = [rng.choice(pool) for _ in range(rng.randint(1, 2))]
    phrase = " ".join(chosen)
    return {"instruction": "Upper-case: " + phrase, "output": phrase.upper()}


out.mkdir(parents=True, exist_ok=True)
words = words[:400]  # a vocabulary a 3M-parameter model can learn in a few hundred LoRA steps
train = [example(words) for _ in range(n_train)]
seen = {e["instruction"] for e in train}
held_out = []  # prompts never trained on: new words or new pairs of known words
while len(held_out) < n_eval:
    e = example(words)
    if e["instruction"] not in seen:
        held_out.append(e)
        seen.add(e["instruction"])
for name, examples in (("train", train), ("eval", held_out)):
    with open(out / f"uppercase_{name}.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(e) + "\n" for e in examples)
print(f"wrote {n_train} train and {n_eval} eval examples to {out}")
