#!/usr/bin/env python3
"""DICOMweb retrieval, side by side: a CT series (512x512, 16-bit) retrieved by WADO-RS
from a local Orthanc (DICOMweb plugin, 127.0.0.1) by

- `curl` of the same multipart/related response to /dev/null: the transport floor;
- `medfm convert SERIES_URL --out vol.nii`: retrieve (streamed multipart), parse every
  instance, decode the series into a volume and write it as NIfTI; and the same command
  on the local files (no network): the difference is what retrieving costs medfm, set
  against the curl floor;
- `dicomweb-client` + pydicom: `retrieve_series`, then every instance's `pixel_array`
  rescaled to float32 and stacked (no file written).

Each tool runs as its own process, in turn, `--runs` times; medians of the wall time
(the Python peer also reports its time without the interpreter start and imports).
`--browser`: also the app in headless Chromium (CPU backend) behind a same-origin proxy
(bench/browser/pacs.mjs): time to the first slice rendered and to the whole series open.
Developers' tooling (numbers in BENCHMARKS.md); needs orthanc, orthanc-dicomweb, curl and
the check venv's python (pydicom, numpy, dicomweb-client), as scripts/test.sh installs.

    dicomweb.py [--instances N] [--runs R] [--medfm BIN] [--browser]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import orthanc as local_orthanc  # noqa: E402
from node import make_ct  # noqa: E402

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'

PEER = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
from dicomweb_client.api import DICOMwebClient
t1 = time.perf_counter()
client = DICOMwebClient(sys.argv[1])
datasets = client.retrieve_series(sys.argv[2], sys.argv[3])
vol = np.stack([ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1))
                + float(getattr(ds, "RescaleIntercept", 0)) for ds in datasets])
t2 = time.perf_counter()
print(f"{len(datasets)} {vol.shape} {t2 - t1:.4f}")
"""


def timed(cmd, **kw):
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    secs = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({r.returncode}): {r.stderr[-1500:]}")
    return secs, r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=60)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--medfm", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug/medfm"))
    a = ap.parse_args()
    if not os.path.exists(a.medfm):
        raise SystemExit(f"{a.medfm} is missing (cargo build)")
    work = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    try:
        files = make_ct(a.instances, work / "ct")
        mb = sum(f.stat().st_size for f in files) / 1e6
        try:
            orthanc, base = local_orthanc.start(work)
        except RuntimeError as e:
            raise SystemExit(str(e))
        try:
            for f in files:
                local_orthanc.request(f"{base}/instances", f.read_bytes())
            import pydicom
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
            study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
            root = f"{base}/dicom-web"
            url = f"{root}/studies/{study}/series/{series}"
            out = work / "vol.nii"
            results = {"curl (transport floor)": [], "medfm convert URL": [], "medfm convert local files": [],
                       "dicomweb-client + pydicom": []}
            inner = []
            for _ in range(a.runs):
                secs, _ = timed(["curl", "-sS", "--fail", "-o", "/dev/null", "-H", f"Accept: {ACCEPT}", url])
                results["curl (transport floor)"].append(secs)
                secs, _ = timed([a.medfm, "convert", url, "--out", str(out)])
                results["medfm convert URL"].append(secs)
                want = 352 + a.instances * 512 * 512 * 2  # NIfTI: header + 16-bit voxels at least
                got = out.stat().st_size
                if got < want:
                    raise SystemExit(f"medfm wrote {got} bytes, a {a.instances}-slice volume needs about {want}")
                out.unlink()
                secs, _ = timed([a.medfm, "convert", str(work / "ct"), "--out", str(out)])
                results["medfm convert local files"].append(secs)
                out.unlink()
                secs, text = timed([sys.executable, "-c", PEER, root, study, series])
                n = int(text.split()[0])
                if n != a.instances:
                    raise SystemExit(f"dicomweb-client got {n} instances, not {a.instances}")
                results["dicomweb-client + pydicom"].append(secs)
                inner.append(float(text.split()[-1]))
            browser = None
            if a.browser:
                _, text = timed(["node", str(Path(__file__).resolve().parent / "browser/pacs.mjs"), "--pacs", base,
                                 "--study", study, "--series", series, "--runs", str(a.runs)])
                browser = json.loads(text.strip().splitlines()[-1])["runs"]
                if any(r["instances"] != a.instances for r in browser):
                    raise SystemExit(f"the browser opened {[r['instances'] for r in browser]} instances")
        finally:
            local_orthanc.stop(orthanc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    floor = statistics.median(results["curl (transport floor)"])
    print(f"WADO-RS retrieve of a {a.instances}-slice CT series (512x512, {mb:.1f} MB) from Orthanc "
          f"on 127.0.0.1, median of {a.runs}, each tool its own process:")
    table = {}
    def row(name, m):
        table[name] = {"s": m, "x_floor": m / floor}
        print(f"  {name:<52} {m:6.3f} s  {mb / m:7.1f} MB/s  ({m / floor:.2f}x the curl floor)")

    for name, xs in results.items():
        row(name, statistics.median(xs))
        if name == "medfm convert local files":
            # Paired per run: what the URL costs medfm over the same command on the files.
            row("  medfm's retrieval (URL run - local run, median)",
                statistics.median(u - l for u, l in zip(results["medfm convert URL"], xs)))
    row("  dicomweb-client + pydicom without start and imports", statistics.median(inner))
    if browser:
        first = statistics.median(r["firstSliceMs"] / 1000 for r in browser)
        total = statistics.median(r["totalMs"] / 1000 for r in browser)
        table["browser"] = {"first_slice_s": first, "series_s": total, "x_floor": total / floor}
        print(f"  {'browser (Chromium, wasm): the series open':<52} {total:6.3f} s  {mb / total:7.1f} MB/s  "
              f"({total / floor:.2f}x the curl floor); its first slice rendered at {first:.3f} s")
    print(json.dumps(table))


if __name__ == "__main__":
    sys.exit(main())
