#!/usr/bin/env python3
"""Read a SEG back with highdicom and compare its pixels with the mask we wrote.

    check_seg.py SEG.dcm MASK.u8 ROWS COLS      (MASK.u8: raw 0/1 bytes, row-major)

Prints what it checked; exits non-zero on any difference. Used by tests/seg.rs (CI
installs highdicom into ~/.cache/medfm/venv-check).
"""
import sys

import highdicom as hd
import numpy as np


def main():
    seg_path, mask_path, rows, cols = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    seg = hd.seg.segread(seg_path)
    expected = np.fromfile(mask_path, dtype=np.uint8).reshape(rows, cols)
    assert seg.segmentation_type.value == "BINARY", seg.segmentation_type
    assert seg.number_of_segments == 1, seg.number_of_segments
    desc = seg.get_segment_description(1)
    assert desc.algorithm_type.value == "SEMIAUTOMATIC", desc.algorithm_type
    src = seg.get_source_image_uids()
    assert len(src) == 1, src
    sop_uid = src[0][2]
    vol = seg.get_pixels_by_source_instance(source_sop_instance_uids=[sop_uid], segment_numbers=[1],
                                            assert_missing_frames_are_empty=True)
    got = np.asarray(vol)[0, :, :, 0].astype(np.uint8)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    diff = int((got != expected).sum())
    assert diff == 0, f"{diff} pixels differ"
    print(f"highdicom {hd.__version__}: {seg_path} BINARY, 1 segment SEMIAUTOMATIC, source {sop_uid}, "
          f"{int(expected.sum())} px, pixels identical")


if __name__ == "__main__":
    main()
