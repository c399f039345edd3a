"""Shared set-up of the Python package's tests: the installed `medfm` wheel, the CLI
built from the same tree (MEDFM_BIN) as the reference, the repository's fixtures.

Run by scripts/test.sh (which builds the wheel, installs it into a fresh venv and sets
MEDFM_BIN): `MEDFM_BIN=... python -m pytest tests/python`.
"""

import os
import pathlib
import subprocess

import pytest

DATA = pathlib.Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="session")
def data():
    return DATA


@pytest.fixture(scope="session")
def cli():
    """Run the `medfm` binary; returns its stdout. Fails the test on a non-zero exit."""
    binary = os.environ.get("MEDFM_BIN")
    assert binary, "set MEDFM_BIN to the medfm binary of this tree (scripts/test.sh does)"

    def run(*args):
        done = subprocess.run(
            [binary, *map(str, args)], capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"medfm {' '.join(map(str, args))}: {done.stderr}"
        return done.stdout

    return run


@pytest.fixture(scope="session")
def model():
    """LiteMedSAM int8 on the CPU (the process's one run configuration)."""
    import medfm

    return medfm.Model(precision="int8", device="cpu")


@pytest.fixture(scope="session")
def model_fp32():
    import medfm

    return medfm.Model(precision="fp32", device="cpu")
