#!/usr/bin/python3
# tests/tools/read_tfevents.py -- an independent TensorBoard event file reader: TFRecord framing
# with its own CRC-32C (bitwise, no table), and a minimal protobuf decoder for Event/Summary.
# Standard library only. Exits 1 naming the record on a bad length, CRC or truncated file.
#
# Usage: read_tfevents.py FILE -> prints [{"wall_time", "step", "file_version"?, "scalars": {tag: v}}]
import json
import struct
import sys


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, pos):
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def fields(buf):
    """Yields (field number, wire type, value) of a serialized message."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == 2:
            n, pos = varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        else:
            raise ValueError('unsupported wire type %d' % wire)
        yield field, wire, value


def decode_event(data):
    event = {'scalars': {}}
    for field, wire, value in fields(data):
        if field == 1 and wire == 1:
            event['wall_time'] = struct.unpack('<d', value)[0]
        elif field == 2 and wire == 0:
            event['step'] = value
        elif field == 3 and wire == 2:
            event['file_version'] = value.decode()
        elif field == 5 and wire == 2:
            for f, w, v in fields(value):
                if f != 1:
                    continue
                tag = scalar = None
                for vf, vw, vv in fields(v):
                    if vf == 1:
                        tag = vv.decode()
                    elif vf == 2 and vw == 5:
                        scalar = struct.unpack('<f', vv)[0]
                event['scalars'][tag] = scalar
    return event


def read(path):
    with open(path, 'rb') as f:
        buf = f.read()
    events, pos, index = [], 0, 0
    while pos < len(buf):
        if pos + 12 > len(buf):
            raise ValueError('record %d: truncated header' % index)
        header = buf[pos:pos + 8]
        (length,) = struct.unpack('<Q', header)
        (length_crc,) = struct.unpack('<I', buf[pos + 8:pos + 12])
        if masked(header) != length_crc:
            raise ValueError('record %d: length CRC mismatch' % index)
        data = buf[pos + 12:pos + 12 + length]
        if len(data) != length or pos + 16 + length > len(buf):
            raise ValueError('record %d: truncated data' % index)
        (data_crc,) = struct.unpack('<I', buf[pos + 12 + length:pos + 16 + length])
        if masked(data) != data_crc:
            raise ValueError('record %d: data CRC mismatch' % index)
        events.append(decode_event(data))
        pos += 16 + length
        index += 1
    return events


if __name__ == '__main__':
    try:
        print(json.dumps(read(sys.argv[1])))
    except (ValueError, IndexError, struct.error) as e:
        print('%s: %s' % (sys.argv[1], e), file=sys.stderr)
        sys.exit(1)
