#!/usr/bin/env bash
# Throughput of `medfm embed` in frames/s on the DICOM fixtures (a benchmark, not a test):
# the 5-slice CT, the 7-slice MR and the 10-frame Enhanced MR (22 frames), whole command
# (weights load included, reported separately as the 1-file run).
#   bench/embed.sh [--cpu]      (default: --cpu; pass --gpu to use wgpu)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
DEV=${1:---cpu}
[ "$DEV" = "--gpu" ] && DEV=""
cargo build --quiet
BIN=$CARGO_TARGET_DIR/debug/medfm
OUT=$(mktemp -d)
run() {
  local t0 t1 n
  t0=$(date +%s.%N)
  n=$("$BIN" embed "$@" --out "$OUT/e.npy" --meta "$OUT/e.jsonl" $DEV | awk '{print $1}')
  t1=$(date +%s.%N)
  echo "$n $(awk "BEGIN { print $t1 - $t0 }")"
}
read -r n1 s1 < <(run tests/data/CT_small.dcm)
read -r n s < <(run tests/data/series/ct5n tests/data/series/mr700 tests/data/emri_small.dcm)
fps=$(awk "BEGIN { print ($n - $n1) / ($s - $s1) }")
printf 'medfm embed (litemedsam, %s): %d frames in %.2f s; 1 frame %.2f s (startup + weights + 1 encode)\n' "${DEV:-gpu}" "$n" "$s" "$s1"
printf 'steady throughput: %.2f frames/s (%.0f ms/frame)\n' "$fps" "$(awk "BEGIN { print 1000 / $fps }")"
rm -rf "$OUT"
