# Shared environment of the setup scripts: a persistent build cache outside the clone and
# the weights directory. Source it; override either variable to relocate.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medfm/target}"
export MEDFM_WEIGHTS_DIR="${MEDFM_WEIGHTS_DIR:-$HOME/.cache/medfm/weights}"
mkdir -p "$CARGO_TARGET_DIR" "$MEDFM_WEIGHTS_DIR"
# The Python extension (crates/python) links no libpython, as maturin builds it: the same
# setting for `cargo build` and scripts/python_wheel.sh, so they share pyo3's build.
export PYO3_BUILD_EXTENSION_MODULE=1
