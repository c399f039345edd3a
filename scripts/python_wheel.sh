#!/usr/bin/env bash
# Build the `medfm` Python wheel (crates/python, maturin) into OUT_DIR: OUT_DIR/medfm-*.whl.
# Install it with `pip install OUT_DIR/medfm-*.whl` (README, "Python and archives").
# It reuses the tests' build: the same target folder (scripts/env.sh) and profile (dev:
# optimised, scripts/test.sh's), so Burn and the core are not built again.
# MEDFM_WHEEL_PROFILE=release builds a separate, fully optimised one.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
out="${1:?usage: scripts/python_wheel.sh OUT_DIR}"
venv="$HOME/.cache/medfm/venv-maturin"
if ! "$venv/bin/maturin" --version 2>/dev/null | grep -q '^maturin 1\.16\.'; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "maturin>=1.16,<1.17"
fi
mkdir -p "$out"
# --compatibility linux: a wheel for this machine's glibc (no manylinux audit: the
# extension links only glibc and the system's libstdc++ for CharLS).
"$venv/bin/maturin" build --manifest-path crates/python/Cargo.toml \
  --profile "${MEDFM_WHEEL_PROFILE:-dev}" --compatibility linux --strip --out "$out"
ls "$out"/medfm-*.whl
