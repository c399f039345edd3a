#!/usr/bin/env bash
# The web half of the tests (run by scripts/test.sh in the background, beside the native
# tests, once the native build and the weights are there; also runnable on its own after
# them): the release web build, the browser end-to-end test, the npm package,
# Cornerstone3D, OHIF and the example viewer. Its own build folder
# ($CARGO_TARGET_DIR-web): cargo holds a build folder's lock while tests run, so a shared
# one would wait for the native tests.
#   MEDFM_BIN=$CARGO_TARGET_DIR/debug/medfm MEDFM_CHECK_PY=... bash scripts/test_web.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
source scripts/steps.sh
STEP_LABEL="web: "
trap step_table EXIT
: "${MEDFM_BIN:?the native medfm binary (the reference masks)}"
ARTIFACTS="${MEDFM_ARTIFACTS:-$HOME/.cache/medfm/artifacts}"

step "web app (trunk build --release: the shipped wasm32 library (profile wasm-release, wasm-opt) + worker + viewer + weights + samples -> dist/)"
CARGO_TARGET_DIR="$CARGO_TARGET_DIR-web" trunk build --release

step "browser end-to-end (headless Chromium: forced CPU, the PACS panel against Orthanc, then WebGPU on SwiftShader)"
npm ci --prefix tests/browser --no-audit --no-fund --silent
CHECK_PYTHON="${MEDFM_CHECK_PY:-python3}" node tests/browser/e2e.mjs --path all --artifacts "$ARTIFACTS"

step "npm package (scripts/npm_pack.sh from that web build; installed into a fresh Vite 8 project, tsc, vite build, Chromium on the CPU backend: WebGPU on SwiftShader is the end-to-end test's, the same worker and wasm)"
MEDFM_WEB_DIST=dist node tests/browser/package.mjs --artifacts "$ARTIFACTS"

step "Cornerstone3D (medfm/cornerstone from the packed tarball with Cornerstone3D 5.14 in a fresh Vite 8 project; Chromium: the controller's labelmap against medfm segment)"
MEDFM_WEB_DIST=dist node tests/browser/cornerstone.mjs --artifacts "$ARTIFACTS"

step "OHIF (the published @ohif/app 3.13.2 build, medfm/ohif and its mode from the packed tarball loaded by app-config.js, Orthanc as its DICOMweb source; Chromium: box, propagate, export SEG against medfm segment and dciodvfy)"
MEDFM_WEB_DIST=dist CHECK_PYTHON="${MEDFM_CHECK_PY:-python3}" node tests/browser/ohif.mjs --artifacts "$ARTIFACTS"

step "example viewer (examples/cornerstone built as its README says with the packed tarball; Chromium against Orthanc: box, propagate, export SEG, egress)"
MEDFM_WEB_DIST=dist CHECK_PYTHON="${MEDFM_CHECK_PY:-python3}" node tests/browser/example.mjs --artifacts "$ARTIFACTS"
