#!/usr/bin/python3
# tests/tools/png_colours.py -- counts the pixels of a screenshot drawn in the report's first two
# run colours (#4e79a7, #f28e2b): proof that curves were rendered, not just laid out. Standard
# library PNG decoding (8-bit RGB/RGBA, non-interlaced). Exits 1 when either colour is scarce.
# Usage: png_colours.py SHOT.png
import struct
import sys
import zlib

COLOURS = {'#4e79a7': (0x4E, 0x79, 0xA7), '#f28e2b': (0xF2, 0x8E, 0x2B)}
MIN_PIXELS = 200  # a 640 px wide curve at 2 px is well over this; a legend swatch (10x10) is not


def decode(path):
    with open(path, 'rb') as f:
        data = f.read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
    pos, idat = 8, b''
    while pos < len(data):
        (length,) = struct.unpack('>I', data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b'IHDR':
            width, height, depth, colour_type, _, _, interlace = struct.unpack('>IIBBBBB', body)
            assert depth == 8 and colour_type in (2, 6) and interlace == 0, 'unsupported PNG layout'
        elif kind == b'IDAT':
            idat += body
        pos += 12 + length
    channels = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(line)
        prev = line
    return rows, channels


def main(path):
    rows, channels = decode(path)
    counts = {name: 0 for name in COLOURS}
    for line in rows:
        for i in range(0, len(line), channels):
            px = tuple(line[i:i + 3])
            for name, rgb in COLOURS.items():
                if all(abs(p - q) <= 24 for p, q in zip(px, rgb)):  # anti-aliased edges stay close
                    counts[name] += 1
    print('curve pixels: ' + ', '.join('%s %d' % kv for kv in counts.items()))
    sys.exit(0 if all(n >= MIN_PIXELS for n in counts.values()) else 1)


if __name__ == '__main__':
    main(sys.argv[1])
