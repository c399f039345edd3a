#!/usr/bin/env bash
# Size of the browser bundle's wasm (issue 6 target: <= 3 MB gzipped), dev (what trunk and
# CI build) against the size-optimised profile `wasm-release` (opt-level z, fat LTO, one
# codegen unit, panic abort) with wasm-bindgen and wasm-opt -Oz. Builds the release one
# from scratch the first time (Burn for wasm32: 15-25 minutes on 2 cores).
#   bench/wasm_size.sh            (PROFILES="wasm-release" for one profile)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
command -v wasm-opt >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binaryen >/dev/null
}
bash scripts/web_tools.sh >/dev/null
OUT=$(mktemp -d)
size() { printf '%-44s %8.2f MB raw %7.2f MB gzip -9\n' "$1" \
  "$(awk "BEGIN { print $(stat -c %s "$2") / 1e6 }")" \
  "$(awk "BEGIN { print $(gzip -9 -c "$2" | wc -c) / 1e6 }")"; }
for profile in ${PROFILES:-dev wasm-release}; do
  cargo build --quiet --lib --target wasm32-unknown-unknown --no-default-features --profile "$profile"
  dir=$profile; [ "$profile" = dev ] && dir=debug
  wasm-bindgen --target web --out-dir "$OUT/$profile" \
    "$CARGO_TARGET_DIR/wasm32-unknown-unknown/$dir/medfm.wasm"
  size "$profile, wasm-bindgen" "$OUT/$profile/medfm_bg.wasm"
  wasm-opt -Oz --enable-simd --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
    --enable-mutable-globals "$OUT/$profile/medfm_bg.wasm" -o "$OUT/$profile/opt.wasm"
  size "$profile, + wasm-opt -Oz ($(wasm-opt --version | awk '{print $3}'))" "$OUT/$profile/opt.wasm"
done
rm -rf "$OUT"
