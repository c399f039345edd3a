#!/usr/bin/env bash
# trunk post-build hook (also usable by hand: web_assets.sh DIST): put the LiteMedSAM
# weights (.bpk, made by scripts/weights.sh; the worker checks them against the sha256
# compiled into the engine) and the bundled samples into the app; with MEDFM_PACS_URL
# set, the PACS of the "Open from PACS" panel (scripts/configure_pacs.sh); in release builds
# (`trunk build --release`: profile wasm-release) size-optimise the engine's wasm.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
dest="${1:-${TRUNK_STAGING_DIR:?run by trunk, or give the dist directory}}"
mkdir -p "$dest/weights" "$dest/samples"
# int8 is where www/medfm.js looks beside itself (as in the npm package); www/app.js
# names the fp32 file.
for p in int8 fp32; do
  f="$MEDFM_WEIGHTS_DIR/lite_medsam_$p.bpk"
  if [ ! -f "$f" ]; then
    echo "web_assets.sh: $f is missing: run scripts/weights.sh first" >&2
    exit 1
  fi
  cp "$f" "$dest/weights/"
done
# Samples (provenance: tests/data/PROVENANCE.md).
cp tests/data/MR-SIEMENS-DICOM-WithOverlays.dcm "$dest/samples/abdomen_mr.dcm"
cp tests/data/CT_small.dcm "$dest/samples/head_ct.dcm"
cat > "$dest/samples/index.json" <<'JSON'
[
  {"name": "Abdominal MR (kidneys)", "file": "samples/abdomen_mr.dcm"},
  {"name": "Head CT", "file": "samples/head_ct.dcm"}
]
JSON
if [ "${TRUNK_PROFILE:-}" = release ]; then
  bash scripts/wasm_opt.sh "$dest/medfm-wasm_bg.wasm"
fi
# A PACS configured at build time (docs/browser.md, "PACS"): config.json and the policy.
if [ -n "${MEDFM_PACS_URL:-}" ]; then
  bash scripts/configure_pacs.sh "$dest" "$MEDFM_PACS_URL"
fi
# The service worker's cache is named after this build (www/sw.js), so a new build
# replaces the cached shell and the old cache is deleted.
build=$(cat "$dest/medfm-wasm_bg.wasm" "$dest/medfm-wasm.js" "$dest"/www/*.js "$dest/index.html" | sha256sum | cut -c1-16)
sed -i "s/^const VERSION = 'dev';/const VERSION = '$build';/" "$dest/sw.js"
grep -q "^const VERSION = '$build';" "$dest/sw.js" || { echo "web_assets.sh: cannot version $dest/sw.js" >&2; exit 1; }
