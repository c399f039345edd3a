#!/usr/bin/env python3
"""Developers only: the pydicom reference table for tests/decode.rs (and the browser test).

For each DICOM file in tests/data/decode/, decode every frame with pydicom 3 (+ pylibjpeg
plugins: openjpeg, libjpeg, RLE; pyjpegls) and record, after the modality LUT
(RescaleSlope/Intercept), what medfm's `DicomImage::frame` must give: shape, min, max,
mean and 64 sample values at fixed positions of the interleaved samples. Colour images
are compared as RGB (pydicom converts YBR to RGB, as dicom-pixeldata does); PALETTE COLOR
through its palette (`apply_color_lut`) scaled to 0..255, as medfm returns it. Writes
tests/data/decode/reference.json.

    ~/.cache/medfm/venv-dev/bin/python scripts/make_decode_reference.py
    (venv: pip install pydicom==3.0.2 numpy pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg
     pylibjpeg-rle pyjpegls)
"""
import json
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut

DIR = Path(__file__).resolve().parent.parent / "tests/data/decode"
SAMPLES = 64


def main():
    out = []
    for f in sorted(DIR.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        arr = ds.pixel_array
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        spp = int(ds.SamplesPerPixel)
        if frames == 1:
            arr = arr[None]
        entry = {
            "file": f.name,
            "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
            "transfer_syntax_name": ds.file_meta.TransferSyntaxUID.name,
            "rows": int(ds.Rows), "cols": int(ds.Columns), "frames": frames, "samples_per_pixel": spp,
            "photometric": str(ds.PhotometricInterpretation),
            "bits_allocated": int(ds.BitsAllocated), "bits_stored": int(ds.BitsStored),
            "pydicom": pydicom.__version__,
            "frame_stats": [],
        }
        for i in range(frames):
            a = arr[i]
            if ds.PhotometricInterpretation == "PALETTE COLOR":
                depth = ds.RedPaletteColorLookupTableDescriptor[2]
                a = apply_color_lut(a, ds).astype(np.float64) * 255.0 / (2**depth - 1)
            elif spp == 1:
                a = apply_modality_lut(a, ds)
            v = np.asarray(a, dtype=np.float64).reshape(-1)
            idx = (np.arange(SAMPLES) * (v.size / SAMPLES)).astype(np.int64)
            entry["frame_stats"].append({
                "min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()),
                "positions": idx.tolist(), "values": v[idx].tolist(),
            })
        out.append(entry)
        print(f"{f.name:32s} {entry['transfer_syntax_name'][:44]:44s} {arr.shape}")
    (DIR / "reference.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
