#!/usr/bin/env python3
"""Developers only: the display-pipeline fixtures and their pydicom reference (tests/lut.rs).

No public file of ../shared/fixtures/dicom carries a Modality LUT Sequence, a VOI LUT
Sequence, SIGMOID / LINEAR_EXACT windows, MONOCHROME1, a segmented palette, planar
configuration 1 or Enhanced per-frame functional groups, so this script derives small
files with those attributes from the real pydicom test images (same pixels, attributes
added with pydicom) into tests/data/lut/, and records what pydicom 3 computes for them:

- modality values per frame (`apply_modality_lut`; for the Enhanced file, the frame's own
  Pixel Value Transformation copied to the top level first, because pydicom applies only
  top-level rescales),
- for every VOI of the frame, in medfm's order (windows first, then VOI LUT Sequence items):
  the VOI output scaled to 0..1 (`apply_windowing` / `apply_voi`, divided by their output
  range) and then to 8-bit display values, inverted for MONOCHROME1,
- for colour images, the RGB values (`apply_color_lut` for palettes, scaled to 0..255).

Statistics over the frame plus 64 values at fixed positions, as tests/data/decode.

    ~/.cache/medfm/venv-dev/bin/python scripts/make_lut_fixtures.py
    (venv: pip install pydicom==3.0.2 numpy pylibjpeg pylibjpeg-rle)
"""
import copy
import json
import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT.parent / "shared/fixtures/dicom"
OUT = ROOT / "tests/data/lut"
SAMPLES = 64
PROVENANCE = (
    "Derived by scripts/make_lut_fixtures.py from the pydicom test files "
    "(MIT, ../shared/fixtures/dicom/MANIFEST.md); pixels unchanged, LUT attributes added."
)


def lut_item(first, bits, data, explanation=None, vr="US"):
    item = Dataset()
    item.add_new("LUTDescriptor", "US" if first >= 0 else "SS", [len(data) % 65536, first, bits])
    if explanation:
        item.LUTExplanation = explanation
    item.add_new("LUTData", vr, [int(v) for v in data] if vr == "US" else
                 struct.pack(f"<{len(data)}H", *[int(v) for v in data]))
    return item


def save(ds, name):
    # A derived file is a new series of its own (viewers group by Series Instance UID).
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    if hasattr(ds, "file_meta"):
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageComments = PROVENANCE
    path = OUT / name
    ds.save_as(path, enforce_file_format=True)
    return path


def make_files():
    OUT.mkdir(parents=True, exist_ok=True)
    made = []

    # CT with a non-linear Modality LUT Sequence instead of Rescale (signed stored values,
    # negative first mapped value) and a window on its 16-bit output.
    ds = pydicom.dcmread(SRC / "CT_small.dcm")
    arr = ds.pixel_array.astype(np.int64)
    lo, hi = int(arr.min()) - 10, int(arr.max()) + 10
    first = lo
    n = hi - lo + 1
    data = np.round(np.sqrt(np.arange(n) / (n - 1)) * 65535).astype(np.int64)
    del ds.RescaleSlope, ds.RescaleIntercept
    for k in ("RescaleType",):
        if k in ds:
            delattr(ds, k)
    ds.ModalityLUTSequence = Sequence([lut_item(first, 16, data, "sqrt", vr="OW")])
    ds.ModalityLUTSequence[0].ModalityLUTType = "US"
    ds.WindowCenter, ds.WindowWidth = 40000, 30000
    made.append(save(ds, "ct_modality_lut.dcm"))

    # MR with two windows (LINEAR, explanations) and two VOI LUT Sequence tables
    # (16-bit entries from a stored value below the image minimum, 8-bit entries).
    ds = pydicom.dcmread(SRC / "MR_small.dcm")
    arr = ds.pixel_array.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    ds.WindowCenter, ds.WindowWidth = [600, 1200], [1600, 800]
    ds.WindowCenterWidthExplanation = ["SOFT", "BRIGHT"]
    x = np.arange(hi - lo + 1 - 40)
    t16 = np.round((1 - np.cos(np.pi * x / x[-1])) / 2 * 4095).astype(np.int64)
    t8 = np.round(np.clip(x / x[-1] * 1.5, 0, 1) * 255).astype(np.int64)
    ds.VOILUTSequence = Sequence([
        lut_item(lo + 20, 12, t16, "COSINE"),
        lut_item(lo + 20, 8, t8, "STEEP"),
    ])
    made.append(save(ds, "mr_voi_lut.dcm"))

    ds = pydicom.dcmread(SRC / "MR_small.dcm")
    ds.WindowCenter, ds.WindowWidth = [600, 300], [1600, 0.5]
    ds.WindowCenterWidthExplanation = ["WIDE", "NARROW"]
    ds.VOILUTFunction = "SIGMOID"
    made.append(save(ds, "mr_sigmoid.dcm"))

    ds = pydicom.dcmread(SRC / "MR_small.dcm")
    ds.WindowCenter, ds.WindowWidth = 600.5, 0.5
    ds.VOILUTFunction = "LINEAR_EXACT"
    made.append(save(ds, "mr_linear_exact.dcm"))

    ds = pydicom.dcmread(SRC / "MR_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    made.append(save(ds, "mr_monochrome1.dcm"))

    # Enhanced MR: 5 of emri_small's frames with shared and per-frame functional groups:
    # per-frame rescale, window and position (5 mm apart along an oblique normal).
    ds = pydicom.dcmread(SRC / "emri_small.dcm")
    frames = 5
    ds.PixelData = ds.pixel_array[:frames].tobytes()
    ds.NumberOfFrames = frames
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [0.8, 0.9]
    pm.SliceThickness = 5
    po = Dataset()
    po.ImageOrientationPatient = [1, 0, 0, 0, 0.8, -0.6]
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PlaneOrientationSequence = Sequence([po])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    normal = np.cross([1, 0, 0], [0, 0.8, -0.6])
    for i in range(frames):
        fg = Dataset()
        pv = Dataset()
        pv.RescaleSlope = 1 + 0.5 * i
        pv.RescaleIntercept = -100 * i
        pv.RescaleType = "US"
        fg.PixelValueTransformationSequence = Sequence([pv])
        voi = Dataset()
        voi.WindowCenter = 300 + 50 * i
        voi.WindowWidth = 500 + 100 * i
        fg.FrameVOILUTSequence = Sequence([voi])
        pp = Dataset()
        pp.ImagePositionPatient = [float(v) for v in np.array([-20.0, -30.0, 10.0]) + 5 * i * normal]
        fg.PlanePositionSequence = Sequence([pp])
        per.append(fg)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    made.append(save(ds, "emri_enhanced.dcm"))

    # Segmented palette (discrete, linear and indirect segments) on a crop of the
    # ultrasound palette example.
    ds = pydicom.dcmread(SRC / "examples_palette.dcm")
    crop = ds.pixel_array[120:184, 300:364].copy()
    ds.PixelData = crop.tobytes()
    ds.Rows, ds.Columns = crop.shape
    for c in ("Red", "Green", "Blue"):
        delattr(ds, f"{c}PaletteColorLookupTableData")
        getattr(ds, f"{c}PaletteColorLookupTableDescriptor")[:] = [256, 0, 16]
    red = [0, 1, 0, 1, 255, 65535]
    green = [0, 1, 65535, 1, 255, 0]
    blue = [0, 16] + [i * 1000 for i in range(16)] + [1, 100, 40000] + [2, 1, 0, 0] + [1, 124, 0]
    for c, words in (("Red", red), ("Green", green), ("Blue", blue)):
        ds.add_new(f"Segmented{c}PaletteColorLookupTableData", "OW", struct.pack(f"<{len(words)}H", *words))
    made.append(save(ds, "palette_segmented.dcm"))

    # RGB with planar configuration 1 (colour-by-plane), native.
    ds = pydicom.dcmread(SRC / "SC_rgb_rle.dcm")
    rgb = ds.pixel_array
    ds.PixelData = np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes()
    ds.PlanarConfiguration = 1
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    made.append(save(ds, "rgb_planar1.dcm"))
    return made


def stats(v):
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    idx = (np.arange(SAMPLES) * (v.size / SAMPLES)).astype(np.int64)
    return {"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()),
            "positions": idx.tolist(), "values": v[idx].tolist()}


def frame_view(ds, i):
    """A copy of `ds` whose top level carries frame i's functional groups (pydicom reads
    only top-level rescale and window attributes)."""
    f = copy.deepcopy(ds)
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if seq not in ds:
            continue
        fg = ds[seq][0] if seq.startswith("Shared") else ds[seq][i]
        for group, keys in (("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
                            ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth"))):
            if group in fg:
                for k in keys:
                    if k in fg[group][0] and k not in f:
                        setattr(f, k, fg[group][0][k].value)
    return f


def reference(path):
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        arr = arr[None]
    entry = {"file": path.name, "photometric": str(ds.PhotometricInterpretation),
             "pydicom": pydicom.__version__, "frames": []}
    for i in range(frames):
        a = arr[i]
        if ds.PhotometricInterpretation == "PALETTE COLOR":
            rgb = apply_color_lut(a, ds).astype(np.float64)
            depth = ds.RedPaletteColorLookupTableDescriptor[2]
            entry["frames"].append({"rgb": stats(rgb * 255.0 / (2 ** depth - 1)), "vois": []})
            continue
        if ds.SamplesPerPixel == 3:
            entry["frames"].append({"rgb": stats(a), "vois": []})
            continue
        f = frame_view(ds, i)
        m = apply_modality_lut(a, f)
        fr = {"modality": stats(m), "vois": []}
        n_windows = len(f.WindowCenter) if "WindowCenter" in f and f["WindowCenter"].VM > 1 else (
            1 if "WindowCenter" in f else 0)
        outs = []
        for w in range(n_windows):
            width = f.WindowWidth[w] if f["WindowWidth"].VM > 1 else f.WindowWidth
            func = str(f.get("VOILUTFunction", "LINEAR")).upper()
            if (func == "LINEAR" and width < 1) or width <= 0:
                outs.append(None)  # not a valid window: medfm skips it
                continue
            y = apply_windowing(m.copy(), f, w)
            # pydicom's output range for this file (see apply_windowing)
            if f.get("ModalityLUTSequence"):
                y0, y1 = 0, 2 ** f.ModalityLUTSequence[0].LUTDescriptor[2] - 1
            elif f.PixelRepresentation == 0:
                y0, y1 = 0, 2 ** f.BitsStored - 1
            else:
                y0, y1 = -(2 ** (f.BitsStored - 1)), 2 ** (f.BitsStored - 1) - 1
            if "RescaleSlope" in f and "RescaleIntercept" in f:
                y0, y1 = y0 * f.RescaleSlope + f.RescaleIntercept, y1 * f.RescaleSlope + f.RescaleIntercept
            outs.append((y - y0) / (y1 - y0))
        for t, item in enumerate(f.get("VOILUTSequence", [])):
            depth = item.LUTDescriptor[2]
            if depth == 8:
                # pydicom 3.0.2's apply_voi indexes 8-bit tables through a uint8 array, so
                # indices past 255 wrap before they are clipped: index the table here.
                table = np.asarray(item.LUTData, dtype=np.float64)
                idx = np.clip(m.astype(np.int64) - item.LUTDescriptor[1], 0, len(table) - 1)
                y = table[idx]
            else:
                y = apply_voi(m.astype(np.int64), f, t).astype(np.float64)
            outs.append(y / (2 ** depth - 1))
        for y in outs:
            if y is None:
                continue
            y = np.clip(y, 0, 1)
            if ds.PhotometricInterpretation == "MONOCHROME1":
                y = 1 - y
            fr["vois"].append({"unit": stats(y), "display": stats(np.round(y * 255))})
        fr["skipped_windows"] = sum(o is None for o in outs)
        entry["frames"].append(fr)
    return entry


def main():
    made = make_files()
    refs = [reference(p) for p in sorted(made)]
    (OUT / "reference.json").write_text(json.dumps(refs, indent=1) + "\n")
    (OUT / "PROVENANCE.md").write_text(
        "# tests/data/lut\n\n" + PROVENANCE + "\n\nRegenerate: `scripts/make_lut_fixtures.py`.\n\n"
        + "\n".join(f"- {p.name} ({p.stat().st_size} bytes)" for p in sorted(made)) + "\n")
    for r in refs:
        print(r["file"], len(r["frames"]), [len(f["vois"]) for f in r["frames"]])


if __name__ == "__main__":
    main()
