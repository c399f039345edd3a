#!/usr/bin/env python3
"""Write fuzz/regressions/oom-segmented-palette-entries-*.dcm (issue 19, item 3).

From tests/data/lut/palette_segmented.dcm: each palette's segmented data becomes a discrete
segment, a linear segment of 65535 entries and four indirect segments copying that linear
segment 65535 times each (about 4.3 billion entries, 8.6 GB as 16-bit words, from 48
bytes); the descriptors declare -1 entries (SS: -1 cast to usize is 2^64 - 1) or
4294967295 (UL). A reader that trusts the descriptor expands until memory runs out.
pydicom writes LUT descriptors as US, so the VR and value bytes are patched afterwards.
Needs pydicom (scripts/test.sh's checker venv has it).
"""
import io
import struct

import pydicom
from pydicom.dataelem import DataElement

d = pydicom.dcmread("tests/data/lut/palette_segmented.dcm")
words = [0, 1, 100, 1, 65535, 200]
for _ in range(4):
    words += [2, 65535, 3, 0]  # indirect: 65535 copies of the segment at word 3
data = struct.pack("<%dH" % len(words), *words)
for desc, seg in [(0x00281101, 0x00281221), (0x00281102, 0x00281222), (0x00281103, 0x00281223)]:
    d[seg] = DataElement(seg, "OW", data)
    d[desc] = DataElement(desc, "US", [65535, 0, 16])
buf = io.BytesIO()
d.save_as(buf, enforce_file_format=True)
raw = buf.getvalue()


def patch(raw, vr, value):
    for el in (0x1101, 0x1102, 0x1103):
        tag = struct.pack("<HH", 0x0028, el)
        old = tag + b"US" + struct.pack("<H", 6) + struct.pack("<3H", 65535, 0, 16)
        assert raw.count(old) == 1
        raw = raw.replace(old, tag + vr + struct.pack("<H", len(value)) + value)
    return raw


out = "fuzz/regressions/oom-segmented-palette-entries-"
open(out + "minus-1.dcm", "wb").write(patch(raw, b"SS", struct.pack("<3h", -1, 0, 16)))
open(out + "4294967295.dcm", "wb").write(patch(raw, b"UL", struct.pack("<3I", 4294967295, 0, 16)))
