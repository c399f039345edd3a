#!/usr/bin/env bash
# Install the web build tools if missing or at another version: trunk 0.21.14 (0.22 needs
# rustc 1.96) and wasm-bindgen-cli at exactly the wasm-bindgen version in Cargo.lock.
# Nothing is downloaded at build time: Trunk.toml pins these versions; wasm-opt for release
# builds is binaryen from npm (scripts/binaryen, installed here).
set -euo pipefail
cd "$(dirname "$0")/.."
TRUNK_VERSION=0.21.14
WBG_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ "$(trunk --version 2>/dev/null)" != "trunk $TRUNK_VERSION" ]; then
  env -u CARGO_TARGET_DIR cargo install trunk --version "$TRUNK_VERSION" --locked
fi
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$WBG_VERSION" ]; then
  env -u CARGO_TARGET_DIR cargo install wasm-bindgen-cli --version "$WBG_VERSION"
fi
if ! grep -qF "wasm_bindgen = \"$WBG_VERSION\"" Trunk.toml; then
  echo "Trunk.toml pins another wasm-bindgen than Cargo.lock ($WBG_VERSION): update [tools]" >&2
  exit 1
fi
if [ ! -f scripts/binaryen/node_modules/binaryen/bin/wasm-opt ]; then
  npm ci --prefix scripts/binaryen --no-audit --no-fund --silent
fi
