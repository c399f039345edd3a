#!/usr/bin/env bash
# Decode throughput, medfm vs pydicom 3 (+ pylibjpeg, pyjpegls) on the same files, same
# machine, one after the other (a benchmark, not a test). Both read the bytes from memory
# and decode every frame to float32 with the modality LUT (palettes to RGB).
#   bench/decode.sh [RUNS]      (default 20; files: tests/data/decode + tests/data/lut)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
RUNS=${1:-20}
VENV="$HOME/.cache/medfm/venv-bench-decode"
if ! "$VENV/bin/python" -c "import pydicom, pylibjpeg, openjpeg, libjpeg, rle, jpeg_ls" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet pydicom==3.0.2 numpy pylibjpeg pylibjpeg-libjpeg \
    pylibjpeg-openjpeg pylibjpeg-rle pyjpegls
fi
cargo build --quiet --bin medfm
FILES=$(ls tests/data/decode/*.dcm tests/data/lut/*.dcm)
OUT=$(mktemp -d)
"$CARGO_TARGET_DIR/debug/medfm" bench-decode $FILES --runs "$RUNS" --json > "$OUT/medfm.jsonl"
"$VENV/bin/python" bench/decode_pydicom.py "$RUNS" $FILES > "$OUT/pydicom.jsonl"
"$VENV/bin/python" - "$OUT/medfm.jsonl" "$OUT/pydicom.jsonl" <<'PY'
import json, os, statistics, sys
load = lambda p: {os.path.basename(j["file"]): j for j in map(json.loads, open(p))}
m, p = load(sys.argv[1]), load(sys.argv[2])
print(f"{'file':34} {'frames':>6} {'medfm ms':>10} {'pydicom ms':>11} {'ratio':>7}")
ratios = []
for f in sorted(m):
    a, b = m[f], p.get(f, {})
    if "error" in a or "error" in b:
        print(f"{f:34} {'':>6} {a.get('error', '')[:40]:>10} {b.get('error', '')[:40]}")
        continue
    r = a["ms_median"] / b["ms_median"]
    ratios.append(r)
    print(f"{f:34} {a['frames']:6} {a['ms_median']:10.3f} {b['ms_median']:11.3f} {r:7.2f}x")
print(f"geometric mean medfm / pydicom: {statistics.geometric_mean(ratios):.2f}x over {len(ratios)} files "
      "(below 1: medfm faster)")
PY
rm -rf "$OUT"
