#!/usr/bin/env python3
"""Read a SEG back with highdicom and compare its pixels with the mask we wrote.

    check_seg.py SEG.dcm MASK.u8 ROWS COLS [SOURCES.json [SEGMENTS.json]]

MASK.u8: raw 0/1 bytes, row-major, one ROWS x COLS mask per SEG frame. SOURCES.json (for a
SEG over several frames): `[[sop_instance_uid, frame_number or null, segment], ...]`, one
entry per mask in order (segment defaults to 1); each mask is compared with what highdicom
returns for that source frame and segment. SEGMENTS.json (default: one segment):
`[{"label": ..., "color": [r, g, b] or null}, ...]`, the segments in number order; each
label must match and each colour, read back through highdicom's CIELab conversion, must be
the sRGB colour given (RecommendedDisplayCIELabValue within 16 of 65535 of highdicom's own:
its conversion goes through Little CMS, whose 16-bit tables differ from the exact
formula by a few units; a D50 white instead of D65 would be off by thousands).

Prints what it checked; exits non-zero on any difference. Used by tests/seg.rs (CI
installs highdicom into ~/.cache/medfm/venv-check).
"""
import json
import sys

import highdicom as hd
import numpy as np


def main():
    seg_path, mask_path, rows, cols = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    seg = hd.seg.segread(seg_path)
    expected = np.fromfile(mask_path, dtype=np.uint8).reshape(-1, rows, cols)
    assert seg.segmentation_type.value == "BINARY", seg.segmentation_type
    segments = json.load(open(sys.argv[6])) if len(sys.argv) > 6 else [{"label": None, "color": None}]
    assert seg.number_of_segments == len(segments), (seg.number_of_segments, len(segments))
    for number, want in enumerate(segments, start=1):
        desc = seg.get_segment_description(number)
        assert desc.algorithm_type.value == "SEMIAUTOMATIC", desc.algorithm_type
        if want["label"] is not None:
            assert desc.segment_label == want["label"], (number, desc.segment_label, want)
        lab = getattr(desc, "RecommendedDisplayCIELabValue", None)
        if want["color"] is None:
            assert lab is None, (number, lab)
        else:
            ref = hd.color.CIELabColor.from_rgb(*want["color"]).value
            assert all(abs(int(a) - b) <= 16 for a, b in zip(lab, ref)), (number, list(lab), ref)
            back = hd.color.CIELabColor.from_dicom_value(lab).to_rgb()
            assert all(abs(a - b) <= 1 for a, b in zip(back, want["color"])), (number, back, want)
    src = seg.get_source_image_uids()
    if len(sys.argv) > 5:
        sources = json.load(open(sys.argv[5]))
    else:
        assert len(src) == 1, src
        sources = [[src[0][2], None]]
    assert len(sources) == expected.shape[0], (len(sources), expected.shape)
    assert {s[2] for s in src} == {s[0] for s in sources}, (src, sources)
    for entry, want in zip(sources, expected):
        uid, frame = entry[0], entry[1]
        number = entry[2] if len(entry) > 2 else 1
        if frame is None:
            vol = seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], segment_numbers=[number],
                                                    assert_missing_frames_are_empty=True)
        else:
            vol = seg.get_pixels_by_source_frame(source_sop_instance_uid=uid, source_frame_numbers=[frame],
                                                 segment_numbers=[number], assert_missing_frames_are_empty=True)
        got = np.asarray(vol)[0, :, :, 0].astype(np.uint8)
        assert got.shape == want.shape, (got.shape, want.shape)
        diff = int((got != want).sum())
        assert diff == 0, f"{uid} frame {frame}: {diff} pixels differ"
    print(f"highdicom {hd.__version__}: {seg_path} BINARY, {len(segments)} segment(s) SEMIAUTOMATIC, {len(sources)} frame(s) "
          f"from {len(src)} source instance(s), {int(expected.sum())} px, pixels identical")


if __name__ == "__main__":
    main()
