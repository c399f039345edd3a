#!/usr/bin/env python3
"""The peers of `medfm bench`: the PyTorch reference (eager) and onnxruntime (ONNX export of
the same LiteMedSAM encoder and decoder), on the same DICOM file, box and thread count.

Developers' tooling (bench/run.sh drives it); prints one JSON report like `medfm bench --json`.

    peers.py WHEEL torch|ort [--runs N] [--threads T] [--image FILE] [--box X0,Y0,X1,Y1]

The ONNX files are exported once into ~/.cache/medfm/onnx and checked against PyTorch
(max |diff| printed to stderr) before anything is timed.
"""
import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from make_parity_fixtures import install_reference, preprocess  # noqa: E402


def stats(v):
    v = sorted(v)
    n = len(v)
    med = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return {"median_ms": med, "min_ms": v[0], "max_ms": v[-1], "runs": n}


class Decoder(torch.nn.Module):
    """Box prompt -> low-res logits + IoU, as one graph (prompt encoder + mask decoder)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, embedding, box):
        sparse, dense = self.net.prompt_encoder(points=None, boxes=box[:, None, :], masks=None)
        return self.net.mask_decoder(image_embeddings=embedding, image_pe=self.net.prompt_encoder.get_dense_pe(),
                                     sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                     multimask_output=False)


def postprocess(logits, new, size):
    """Crop, bilinear upsample (half-pixel), threshold: the same as medfm's."""
    up = F.interpolate(torch.as_tensor(logits)[:, :1, :new[0], :new[1]], size=size, mode="bilinear",
                       align_corners=False)
    return (up[0, 0] > 0).numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wheel")
    ap.add_argument("peer", choices=["torch", "ort"])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="torch peer only: cpu or cuda")
    ap.add_argument("--image", default=str(ROOT / "tests/data/MR-SIEMENS-DICOM-WithOverlays.dcm"))
    ap.add_argument("--box", default="110,280,190,355")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    box_px = [float(v) for v in a.box.split(",")]
    data = Path(a.image).read_bytes()

    def prepare():
        import io
        x, size, new, scale = preprocess(pydicom.dcmread(io.BytesIO(data)))
        return torch.from_numpy(x)[None], size, new, torch.tensor([[v * scale for v in box_px]], dtype=torch.float32)

    t0 = time.perf_counter()
    net = install_reference(Path(a.wheel))
    if a.peer == "torch":
        dev = torch.device(a.device)
        net = net.to(dev)
        dec = Decoder(net).eval()

        @torch.no_grad()
        def encode(x):
            out = net.image_encoder(x.to(dev))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return out

        @torch.no_grad()
        def decode(emb, box):
            logits, iou = dec(emb, box.to(dev))
            return logits.cpu().numpy(), iou.cpu().numpy()
        label = f"pytorch {torch.__version__} eager {a.device}"
    else:
        import onnxruntime as ort
        cache = Path.home() / ".cache/medfm/onnx"
        cache.mkdir(parents=True, exist_ok=True)
        enc_path, dec_path = cache / "lite_medsam_encoder.onnx", cache / "lite_medsam_decoder.onnx"
        x, _, _, box = prepare()
        with torch.no_grad():
            emb_ref = net.image_encoder(x)
            logits_ref, iou_ref = Decoder(net)(emb_ref, box)
            if not enc_path.exists():
                torch.onnx.export(net.image_encoder, (x,), str(enc_path), input_names=["image"],
                                  output_names=["embedding"], opset_version=17, dynamo=False)
            if not dec_path.exists():
                torch.onnx.export(Decoder(net), (emb_ref, box), str(dec_path), input_names=["embedding", "box"],
                                  output_names=["logits", "iou"], opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        t0 = time.perf_counter()  # cold start counts session creation, not the one-off export
        enc_s = ort.InferenceSession(str(enc_path), so, providers=["CPUExecutionProvider"])
        dec_s = ort.InferenceSession(str(dec_path), so, providers=["CPUExecutionProvider"])

        def encode(x):
            return enc_s.run(None, {"image": x.numpy()})[0]

        def decode(emb, box):
            return dec_s.run(None, {"embedding": emb, "box": box.numpy()})
        check = (emb_ref.numpy(), logits_ref.numpy())
        label = f"onnxruntime {ort.__version__} CPU"

    x, size, new, box = prepare()
    emb = encode(x)
    logits, _ = decode(emb, box)
    area = int(postprocess(logits, new, size).sum())
    cold = (time.perf_counter() - t0) * 1e3
    if a.peer == "ort":
        print(f"onnx check: embedding max|diff| {np.abs(emb - check[0]).max():.2e}, "
              f"logits max|diff| {np.abs(logits - check[1]).max():.2e}", file=sys.stderr)

    enc_t, dec_t, e2e_t = [], [], []
    for _ in range(a.runs):
        t = time.perf_counter()
        emb = encode(x)
        enc_t.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        logits, _ = decode(emb, box)
        postprocess(logits, new, size)
        dec_t.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        x2, size2, new2, box2 = prepare()
        logits, _ = decode(encode(x2), box2)
        postprocess(logits, new2, size2)
        e2e_t.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({
        "tool": label, "device": a.device if a.peer == "torch" else "cpu", "precision": "fp32", "threads": a.threads, "area": area,
        "cold_start_ms": cold, "encoder": stats(enc_t), "decoder": stats(dec_t), "end_to_end": stats(e2e_t),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }, indent=1))


if __name__ == "__main__":
    main()
