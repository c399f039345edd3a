#!/usr/bin/env python3
"""Receive throughput of the edge node, side by side: `medfm node` vs DCMTK's `storescp`
vs Orthanc, each receiving the same CT instances (512x512, 16-bit) from DCMTK's
`storescu` over 4 concurrent associations on 127.0.0.1. Developers' tooling (numbers in
BENCHMARKS.md); needs dcmtk, orthanc and python with pydicom and numpy (the check venv).

    node.py [--instances N] [--runs R] [--medfm BIN] [--embed]

medfm acknowledges an instance only after fsync of the file and its folder; storescp
writes without fsync (it has no such option; `--fork`, a process per association),
Orthanc writes through its storage area
and SQLite index (its own sync policy). `--embed` also times, for medfm, the last
instance of a series to its vectors in the node's index (the series idle time, 1 s,
included and reported).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, secs=30):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def make_ct(n, out):
    """n CT slices of one series, 512x512: CT_small's pixels tiled 4x4 (real CT values)."""
    src = pydicom.dcmread(ROOT / "tests/data/CT_small.dcm")
    tile = np.tile(src.pixel_array, (4, 4)).astype(src.pixel_array.dtype)
    study, series = generate_uid(), generate_uid()
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        ds = src.copy()
        ds.Rows, ds.Columns = tile.shape
        ds.PixelData = tile.tobytes()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0, 0, float(i)]
        p = out / f"{i:04}.dcm"
        ds.save_as(p, enforce_file_format=True)
        files.append(p)
    return files


def send(port, files, ae="MEDFM"):
    """storescu over 4 associations; wall seconds."""
    parts = [files[i::4] for i in range(4)]
    t = time.perf_counter()
    procs = [
        subprocess.Popen(["storescu", "-aet", "MODALITY", "-aec", ae, "127.0.0.1", str(port), *map(str, p)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for p in parts
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - t


def run_medfm(binary, files, embed):
    d = Path(tempfile.mkdtemp(prefix="bench-node-"))
    port = free_port()
    cfg = f'bind = "127.0.0.1"\nport = {port}\nhttp = ""\nspool = "{d}/spool"\nseries_idle_seconds = 1\n'
    if embed:
        cfg += '[[rule]]\nmodality = "CT"\njobs = ["embed"]\n'
    (d / "node.toml").write_text(cfg)
    log = open(d / "log", "w")
    env = dict(os.environ)
    env.setdefault("MEDFM_WEIGHTS_DIR", os.path.expanduser("~/.cache/medfm/weights"))
    p = subprocess.Popen([binary, "node", "--config", str(d / "node.toml")], stderr=log, env=env)
    wait_port(port)
    secs = send(port, files)
    embed_s = None
    if embed:
        t = time.perf_counter()
        while "embedded" not in (text := (d / "log").read_text()):
            if "job failed" in text or time.perf_counter() - t > 600:
                p.terminate()
                raise SystemExit("the embed job did not finish:\n" + text[-2000:])
            time.sleep(0.05)
        embed_s = time.perf_counter() - t
    p.terminate()
    p.wait()
    stored = sum(1 for _ in (d / "spool").rglob("*.dcm"))
    shutil.rmtree(d)
    assert stored == len(files), (stored, len(files))
    return secs, embed_s


def run_storescp(files):
    d = Path(tempfile.mkdtemp(prefix="bench-storescp-"))
    port = free_port()
    # --fork: a process per association (storescp serves one at a time otherwise).
    p = subprocess.Popen(["storescp", "--fork", "-aet", "MEDFM", "+xa", "-od", str(d), str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    secs = send(port, files)
    p.terminate()
    p.wait()
    shutil.rmtree(d)
    return secs


def run_orthanc(files):
    d = Path(tempfile.mkdtemp(prefix="bench-orthanc-"))
    port, http = free_port(), free_port()
    (d / "orthanc.json").write_text(json.dumps({
        "Name": "bench", "StorageDirectory": str(d / "storage"), "IndexDirectory": str(d / "index"),
        "DicomAet": "MEDFM", "DicomPort": port, "HttpPort": http, "RemoteAccessAllowed": False,
        "DicomCheckCalledAet": False, "Plugins": [],
    }))
    p = subprocess.Popen(["Orthanc", str(d / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    secs = send(port, files)
    p.terminate()
    p.wait()
    shutil.rmtree(d)
    return secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--medfm", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug/medfm"))
    ap.add_argument("--embed", action="store_true")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ct-"))
    files = make_ct(a.instances, work)
    mb = sum(f.stat().st_size for f in files) / 1e6
    results = {"medfm node": [], "storescp": [], "Orthanc": []}
    embeds = []
    for _ in range(a.runs):
        secs, e = run_medfm(a.medfm, files, a.embed)
        results["medfm node"].append(secs)
        if e is not None:
            embeds.append(e)
        results["storescp"].append(run_storescp(files))
        results["Orthanc"].append(run_orthanc(files))
    shutil.rmtree(work)
    print(f"{a.instances} CT instances (512x512, {mb:.0f} MB), storescu x4 associations, median of {a.runs}:")
    base = statistics.median(results["medfm node"])
    table = {}
    for name, xs in results.items():
        m = statistics.median(xs)
        table[name] = {"s": m, "instances_per_s": a.instances / m, "mb_per_s": mb / m}
        print(f"  {name:<11} {m:6.2f} s  {a.instances / m:7.1f} inst/s  {mb / m:6.1f} MB/s  "
              f"(its time / medfm's: {m / base:.2f}x)")
    if embeds:
        e = statistics.median(embeds)
        table["last instance to embeddings s"] = e
        print(f"  last instance -> embeddings in the index: {e:.1f} s (includes series_idle_seconds = 1)")
    print(json.dumps(table))


if __name__ == "__main__":
    sys.exit(main())
