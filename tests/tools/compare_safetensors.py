#!/usr/bin/env python3
# tests/tools/compare_safetensors.py -- max |a - b| over the tensors of two safetensors files,
# read with the standard library alone (no safetensors or numpy here). Exit 1 past the tolerance.
# Usage: compare_safetensors.py A B TOLERANCE
import array
import json
import struct
import sys

TYPECODES = {"F32": "f", "F64": "d", "I64": "q", "I32": "i", "U8": "B"}


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n :]
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        out[name] = array.array(TYPECODES[info["dtype"]], data[begin:end])
    return out


def main():
    a, b, tol = read(sys.argv[1]), read(sys.argv[2]), float(sys.argv[3])
    if sorted(a) != sorted(b):
        print("different tensor names:", sorted(set(a) ^ set(b)))
        return 1
    worst = max((abs(x - y) for k in a for x, y in zip(a[k], b[k])), default=0.0)
    if any(len(a[k]) != len(b[k]) for k in a):
        print("different tensor sizes")
        return 1
    print(f"max abs difference {worst:.3e} over {len(a)} tensors (tolerance {tol:g})")
    return 0 if worst <= tol else 1


if __name__ == "__main__":
    sys.exit(main())
