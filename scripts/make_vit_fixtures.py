#!/usr/bin/env python3
"""Developers only: parity fixtures for the DINOv2-compatible ViT (src/model/vit.rs).

Builds small random `transformers.Dinov2Model` and `Dinov2WithRegistersModel` from a
seeded config (no download), perturbs every parameter so LayerNorm, LayerScale and biases
are not trivial, and writes per model into tests/data/vit/NAME/: config.json,
model.safetensors (save_pretrained), cases.json (inputs and outputs: CLS =
pooler_output, patch mean = last_hidden_state patches averaged, the whole
last_hidden_state) for the training size and for sizes that need position interpolation
(larger, non-square, smaller).

    python scripts/make_vit_fixtures.py      # needs torch + transformers (the dev venv)
"""
import json
from pathlib import Path

import torch
import transformers
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

OUT = Path(__file__).resolve().parent.parent / "tests/data/vit"
SIZES = [(32, 32), (48, 40), (24, 24)]  # training grid 4x4; 6x5 and 3x3 interpolate


def build(name, model):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    cases = []
    g = torch.Generator().manual_seed(2)
    for h, w in SIZES:
        x = torch.randn(1, 3, h, w, generator=g)
        with torch.no_grad():
            out = model(pixel_values=x)
        regs = getattr(model.config, "num_register_tokens", 0)
        last = out.last_hidden_state
        cases.append({
            "size": [h, w],
            "input": x.flatten().tolist(),
            "cls": out.pooler_output.flatten().tolist(),
            "patch_mean": last[:, 1 + regs:].mean(1).flatten().tolist(),
            "last_hidden": last.flatten().tolist(),
            "tokens": last.shape[1],
        })
    (d / "cases.json").write_text(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                                              "cases": cases}))
    print(name, [k for k in model.state_dict()][:6], "...")


def main():
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4, patch_size=8,
                  image_size=32, layer_norm_eps=1e-6, layerscale_value=0.7)
    torch.manual_seed(0)
    build("dinov2", Dinov2Model(Dinov2Config(**common)))
    torch.manual_seed(0)
    build("dinov2_registers", Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=2, **common)))


if __name__ == "__main__":
    main()
