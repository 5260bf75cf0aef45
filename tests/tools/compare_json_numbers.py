#!/usr/bin/env python3
# tests/tools/compare_json_numbers.py -- two JSON files equal in structure, keys, strings and integers exactly,
# floats within max(REL * max(|a|, |b|), ABS); each difference printed as `PATH: A vs B`. Exit 1 on any, 2 on bad input.
# Usage: compare_json_numbers.py A.json B.json REL ABS
import json
import math
import re
import sys

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHOWN = 20  # differences printed; a dropped example shifts every later one


def child(path, key):
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if IDENTIFIER.match(key) else f"{path}[{json.dumps(key)}]"


def kind(value):
    # bool is an int subclass in Python, and 1 vs 1.0 is a different JSON token: name each kind apart
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


class Comparison:
    def __init__(self, rel, abs_floor):
        self.rel, self.abs_floor = rel, abs_floor
        self.differences = []
        self.floats = 0
        self.worst = (0.0, "", None, None)  # largest |a - b| / allowed, its path and the two values

    def differ(self, path, what):
        self.differences.append(f"{path}: {what}")

    def floats_agree(self, path, a, b):
        self.floats += 1
        if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
            return a == b or (math.isnan(a) and math.isnan(b))
        allowed = max(self.rel * max(abs(a), abs(b)), self.abs_floor)
        share = abs(a - b) / allowed
        if share > self.worst[0]:
            self.worst = (share, path, a, b)
        return abs(a - b) <= allowed

    def walk(self, path, a, b):
        ka, kb = kind(a), kind(b)
        if ka != kb:
            self.differ(path, f"{ka} {json.dumps(a)[:80]} vs {kb} {json.dumps(b)[:80]}")
        elif ka == "object":
            if list(a) != list(b):
                only_a = [k for k in a if k not in b]
                only_b = [k for k in b if k not in a]
                self.differ(path, f"keys {list(a)} vs {list(b)} (only in A: {only_a}, only in B: {only_b})")
            for k in a:
                if k in b:
                    self.walk(child(path, k), a[k], b[k])
        elif ka == "array":
            if len(a) != len(b):
                self.differ(path, f"array of {len(a)} vs {len(b)} items")
            for i, (x, y) in enumerate(zip(a, b)):
                self.walk(child(path, i), x, y)
        elif ka == "float":
            if not self.floats_agree(path, a, b):
                self.differ(path, f"{a!r} vs {b!r} (|a - b| = {abs(a - b):.3e}, relative tolerance {self.rel:g}, "
                                  f"absolute floor {self.abs_floor:g})")
        elif a != b:
            self.differ(path, f"{json.dumps(a)[:200]} vs {json.dumps(b)[:200]} (must be equal exactly)")


def main():
    if len(sys.argv) != 5:
        print("usage: compare_json_numbers.py A.json B.json REL ABS", file=sys.stderr)
        return 2
    path_a, path_b = sys.argv[1], sys.argv[2]
    try:
        rel, abs_floor = float(sys.argv[3]), float(sys.argv[4])
        with open(path_a) as f:
            a = json.load(f)
        with open(path_b) as f:
            b = json.load(f)
    except (OSError, ValueError) as e:
        print(f"compare_json_numbers.py: {e}", file=sys.stderr)
        return 2
    c = Comparison(rel, abs_floor)
    c.walk("$", a, b)
    if c.differences:
        print(f"{path_a} vs {path_b}: {len(c.differences)} difference(s):")
        for d in c.differences[:SHOWN]:
            print(f"  {d}")
        if len(c.differences) > SHOWN:
            print(f"  ... and {len(c.differences) - SHOWN} more")
        return 1
    share, where, x, y = c.worst
    closest = f"; largest difference at {where}: {x!r} vs {y!r}, {share:.2g} of the allowed" if where else ""
    print(f"{path_a} and {path_b} agree: everything but floats exactly, {c.floats} floats within relative "
          f"{rel:g} (absolute floor {abs_floor:g}){closest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
