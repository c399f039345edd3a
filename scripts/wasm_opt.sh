#!/usr/bin/env bash
# Size-optimise a wasm-bindgen output in place with wasm-opt -Oz (binaryen 132 from npm,
# pinned in scripts/binaryen; Debian's binaryen 108 renumbers the module's tables and
# breaks wasm-bindgen's externref table export: the engine then fails to start).
# Run by the trunk post-build hook for `trunk build --release`; prints the sizes.
#   scripts/wasm_opt.sh dist/medfm_bg.wasm
set -euo pipefail
wasm="${1:?usage: wasm_opt.sh FILE.wasm}"
here="$(cd "$(dirname "$0")" && pwd)"
opt="$here/binaryen/node_modules/binaryen/bin/wasm-opt"
if [ ! -f "$opt" ]; then
  npm ci --prefix "$here/binaryen" --no-audit --no-fund --silent
fi
gz() { gzip -9 -c "$1" | wc -c; }
before=$(stat -c %s "$wasm")
before_gz=$(gz "$wasm")
# The features the engine is built with (wasm32 defaults + SIMD128, .cargo/config.toml).
node "$opt" -Oz --enable-simd --enable-bulk-memory --enable-sign-ext \
  --enable-nontrapping-float-to-int --enable-mutable-globals --enable-reference-types \
  --enable-multivalue "$wasm" -o "$wasm.opt"
mv "$wasm.opt" "$wasm"
printf 'wasm_opt.sh: %s %.2f MB (gzip -9 %.2f MB) -> %.2f MB (gzip -9 %.3f MB)\n' "$(basename "$wasm")" \
  "$(awk "BEGIN { print $before / 1e6 }")" "$(awk "BEGIN { print $before_gz / 1e6 }")" \
  "$(awk "BEGIN { print $(stat -c %s "$wasm") / 1e6 }")" "$(awk "BEGIN { print $(gz "$wasm") / 1e6 }")"
