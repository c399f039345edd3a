#!/usr/bin/env python3
"""Read a SEG back with highdicom and compare its pixels with the mask we wrote.

    check_seg.py SEG.dcm MASK.u8 ROWS COLS [SOURCES.json]

MASK.u8: raw 0/1 bytes, row-major, one ROWS x COLS mask per SEG frame. SOURCES.json (for a
SEG over several frames): `[[sop_instance_uid, frame_number or null], ...]`, one entry per
mask in order; each mask is compared with what highdicom returns for that source frame.

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
    assert seg.number_of_segments == 1, seg.number_of_segments
    desc = seg.get_segment_description(1)
    assert desc.algorithm_type.value == "SEMIAUTOMATIC", desc.algorithm_type
    src = seg.get_source_image_uids()
    if len(sys.argv) > 5:
        sources = json.load(open(sys.argv[5]))
    else:
        assert len(src) == 1, src
        sources = [[src[0][2], None]]
    assert len(sources) == expected.shape[0], (len(sources), expected.shape)
    assert {s[2] for s in src} == {uid for uid, _ in sources}, (src, sources)
    for (uid, frame), want in zip(sources, expected):
        if frame is None:
            vol = seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], segment_numbers=[1],
                                                    assert_missing_frames_are_empty=True)
        else:
            vol = seg.get_pixels_by_source_frame(source_sop_instance_uid=uid, source_frame_numbers=[frame],
                                                 segment_numbers=[1], assert_missing_frames_are_empty=True)
        got = np.asarray(vol)[0, :, :, 0].astype(np.uint8)
        assert got.shape == want.shape, (got.shape, want.shape)
        diff = int((got != want).sum())
        assert diff == 0, f"{uid} frame {frame}: {diff} pixels differ"
    print(f"highdicom {hd.__version__}: {seg_path} BINARY, 1 segment SEMIAUTOMATIC, {len(sources)} frame(s) "
          f"from {len(src)} source instance(s), {int(expected.sum())} px, pixels identical")


if __name__ == "__main__":
    main()
