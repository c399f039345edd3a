#!/usr/bin/env bash
# Size of the browser bundle's wasm (issue 6 target: <= 3 MB gzipped): the dev profile
# (`trunk serve`) against `wasm-release` (what `trunk build --release` ships: opt-level z,
# the CPU kernels at 3, fat LTO, one codegen unit, panic abort), each through
# wasm-bindgen and scripts/wasm_opt.sh (wasm-opt -Oz, binaryen 132). Builds a profile from
# scratch the first time (Burn for wasm32: 15-25 minutes on 2 cores).
#   bench/wasm_size.sh            (PROFILES="wasm-release" for one profile)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash scripts/web_tools.sh >/dev/null
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for profile in ${PROFILES:-dev wasm-release}; do
  cargo build --quiet -p medfm-wasm --target wasm32-unknown-unknown --profile "$profile"
  dir=$profile; [ "$profile" = dev ] && dir=debug
  wasm-bindgen --target web --out-name medfm-wasm --out-dir "$OUT/$profile" \
    "$CARGO_TARGET_DIR/wasm32-unknown-unknown/$dir/medfm_wasm.wasm"
  printf '%s: ' "$profile"
  bash scripts/wasm_opt.sh "$OUT/$profile/medfm-wasm_bg.wasm"
done
