#!/usr/bin/env python3
"""pydicom side of bench/decode.sh: read + decode every frame (modality LUT applied to grey
images, palettes applied, as medfm's `DicomImage::frame`), median over N runs per file.

    decode_pydicom.py RUNS FILE...    -> JSON lines {file, frames, ms_median, ms_min, ms_max}
"""
import io
import json
import sys
import time

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut


def once(data):
    ds = pydicom.dcmread(io.BytesIO(data))
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    elif ds.SamplesPerPixel == 1:
        arr = apply_modality_lut(arr, ds)
    return frames, np.asarray(arr, dtype=np.float32)


def main():
    runs, files = int(sys.argv[1]), sys.argv[2:]
    for f in files:
        data = open(f, "rb").read()
        try:
            frames, _ = once(data)
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            print(json.dumps({"file": f, "error": f"{type(e).__name__}: {e}"}))
            continue
        ms = []
        for _ in range(runs):
            t = time.perf_counter()
            once(data)
            ms.append((time.perf_counter() - t) * 1e3)
        ms.sort()
        print(json.dumps({"file": f, "frames": frames, "ms_median": ms[len(ms) // 2],
                          "ms_min": ms[0], "ms_max": ms[-1], "runs": runs}))


if __name__ == "__main__":
    main()
