#!/usr/bin/env python3
"""Propagation through a series, side by side: `medfm segment --propagate` (Burn flex CPU
backend) vs the same 3D recipe (docs/design.md, "Volumes") run with onnxruntime on the
ONNX export of the same LiteMedSAM encoder and decoder (bench/peers.py exports it), same
series, box, extent and thread count. Developers' tooling; prints a table and JSON.

    propagate.py WHEEL [--series DIR] [--start FILE] [--box X0,Y0,X1,Y1] [--extent N]
                 [--runs N] [--threads T] [--medfm BIN]

What is timed, for both: the propagation loop (per slice: preprocessing by the series
recipe, the encoder once, the decoder per box, upsampling and threshold), not reading the
files, the series clip or loading the model. medfm runs in a fresh process per run (its
first encode pays the allocations); onnxruntime runs every time in one warm session.
The per-slice areas of both are printed (they are the same recipe; tests/propagate_parity.rs
checks the masks against PyTorch).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
import make_parity_fixtures as ref  # noqa: E402
import make_propagation_fixtures as prop  # noqa: E402
from peers import Decoder  # noqa: E402


def onnx_sessions(net, threads):
    import onnxruntime as ort
    cache = Path.home() / ".cache/medfm/onnx"
    cache.mkdir(parents=True, exist_ok=True)
    enc_path, dec_path = cache / "lite_medsam_encoder.onnx", cache / "lite_medsam_decoder.onnx"
    x = torch.zeros(1, 3, 256, 256)
    box = torch.tensor([[10.0, 10.0, 100.0, 100.0]])
    with torch.no_grad():
        if not enc_path.exists():
            torch.onnx.export(net.image_encoder, (x,), str(enc_path), input_names=["image"],
                              output_names=["embedding"], opset_version=17, dynamo=False)
        if not dec_path.exists():
            emb = net.image_encoder(x)
            torch.onnx.export(Decoder(net), (emb, box), str(dec_path), input_names=["embedding", "box"],
                              output_names=["logits", "iou"], opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    enc = ort.InferenceSession(str(enc_path), so, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(dec_path), so, providers=["CPUExecutionProvider"])
    return enc, dec, f"onnxruntime {ort.__version__} CPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wheel")
    ap.add_argument("--series", default=str(ROOT / "tests/data/series/brain11"))
    ap.add_argument("--start", default="brain_010.dcm")
    ap.add_argument("--box", default="45,60,215,240")
    ap.add_argument("--extent", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--medfm", default=str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug/medfm"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    box = [float(v) for v in a.box.split(",")]
    folder = Path(a.series)
    net = ref.install_reference(Path(a.wheel))
    enc, dec, label = onnx_sessions(net, a.threads)

    dss = prop.ordered(folder)
    uids = [d.SOPInstanceUID for d in dss]
    start = uids.index(pydicom.dcmread(folder / a.start).SOPInstanceUID)
    lo, hi = prop.series_clip(dss)

    def segment(_net, cache, dss, i, b, lo, hi):
        if i not in cache:
            x, size, new, scale = prop.preprocess(dss[i], lo, hi)
            cache[i] = (enc.run(None, {"image": x[None]})[0], size, new, scale)
        emb, (rows, cols), (nr, nc), scale = cache[i]
        logits, iou = dec.run(None, {"embedding": emb, "box": np.array([[v * scale for v in b]], np.float32)})
        up = F.interpolate(torch.from_numpy(logits)[:, :1, :nr, :nc], size=(rows, cols), mode="bilinear",
                           align_corners=False)
        return (up[0, 0] > 0).numpy().astype(np.uint8), float(iou[0, 0]), scale

    prop.segment = segment
    ort_ms, kept = [], None
    for _ in range(a.runs):
        t = time.perf_counter()
        kept, _ = prop.propagate(None, dss, start, box, a.extent, 0.5, lo, hi)
        ort_ms.append((time.perf_counter() - t) * 1e3)
    ort_areas = {i: int(m.sum()) for i, (m, _, _) in kept.items()}

    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    env.setdefault("MEDFM_WEIGHTS_DIR", str(Path.home() / ".cache/medfm/weights"))
    medfm_ms, medfm_areas = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.runs):
            out = subprocess.run([a.medfm, "segment", str(folder / a.start), "--box", a.box, "--propagate",
                                  "--extent", str(a.extent), "--cpu", "--json", "--out", str(Path(tmp) / "p.dcm")],
                                 env=env, check=True, capture_output=True, text=True).stdout
            j = json.loads(out)
            medfm_ms.append(j["ms"])
            medfm_areas = {s["index"]: s["area"] for s in j["slices"]}
    n = len(kept)
    rows = {"medfm (flex CPU)": statistics.median(medfm_ms), label: statistics.median(ort_ms)}
    print(f"series {folder.name}: {len(dss)} slices {dss[0].Rows}x{dss[0].Columns}, start {start}, extent "
          f"{a.extent}: {n} slices segmented, {a.threads} threads, median of {a.runs} runs")
    for tool, ms in rows.items():
        print(f"  {tool:<32} {ms:9.0f} ms  {n / ms * 1e3:6.2f} slices/s")
    print(f"  medfm / onnxruntime              {rows['medfm (flex CPU)'] / rows[label]:9.2f}x")
    print(f"  areas medfm {[medfm_areas.get(i) for i in sorted(kept)]}")
    print(f"  areas ort   {[ort_areas[i] for i in sorted(kept)]}")
    print(json.dumps({"series": folder.name, "slices": n, "threads": a.threads, "runs": a.runs,
                      "medfm_ms": medfm_ms, "ort_ms": ort_ms, "ort": label}))


if __name__ == "__main__":
    main()
