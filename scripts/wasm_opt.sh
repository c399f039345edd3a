#!/usr/bin/env bash
# Size-optimise a wasm-bindgen output in place with wasm-opt -Oz (binaryen 132 from npm,
# pinned in scripts/binaryen; Debian's binaryen 108 renumbers the module's tables and
# breaks wasm-bindgen's externref table export: the engine then fails to start).
# Run by the trunk post-build hook for `trunk build --release`; prints the sizes.
#   scripts/wasm_opt.sh dist/medfm-wasm_bg.wasm
set -euo pipefail
wasm="${1:?usage: wasm_opt.sh FILE.wasm}"
here="$(cd "$(dirname "$0")" && pwd)"
opt="$here/binaryen/node_modules/binaryen/bin/wasm-opt"
if [ ! -f "$opt" ]; then
  echo "wasm_opt.sh: $opt is missing: run scripts/web_tools.sh first" >&2
  exit 1
fi
# Size of a file in MB (10^6 bytes): as it is, and gzip -9.
mb() { awk "BEGIN { printf \"%.3f\", $1 / 1e6 }"; }
sizes() { echo "$(mb "$(stat -c %s "$1")") MB (gzip -9 $(mb "$(gzip -9 -c "$1" | wc -c)") MB)"; }
before=$(sizes "$wasm")
# The features the engine is built with (wasm32 defaults + SIMD128, .cargo/config.toml).
node "$opt" -Oz --enable-simd --enable-bulk-memory --enable-sign-ext \
  --enable-nontrapping-float-to-int --enable-mutable-globals --enable-reference-types \
  --enable-multivalue "$wasm" -o "$wasm.opt"
mv "$wasm.opt" "$wasm"
echo "wasm_opt.sh: $(basename "$wasm") $before -> $(sizes "$wasm")"
