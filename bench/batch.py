"""The archive batch against the CLI in a shell loop, side by side in one run (a
benchmark, not a test; BENCHMARKS.md, "Archive batch").

    python bench/batch.py --medfm BIN [--series 16] [--runs 5]

with the Python of a venv holding the wheel and its batch extra (docs/python.md). It makes
an archive of SERIES two-slice series (copies of the repository's brain MR and CT slices
with new UIDs), then times on it:
- embed: `medfm embed DIR` once per series (a shell loop, all threads) against
  `python -m medfm.batch --job embed` on a local Ray cluster with 1 and 2 model actors, and
  `--local` (one process): frames/s, weights loading included for everyone;
- segment: `medfm segment --segments` once per series (a box on the middle slice,
  propagated) against `--job segment` with the same rule: series/min;
- one image: `medfm segment IMG --box` against a fresh `python -c` doing
  `Model(); read_series(IMG); segment(); write_seg()`, medians of RUNS: the Python layer's
  overhead on a whole call (process start and weights load included in both).
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import pydicom

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests/data"
BASES = [
    ("brain11", ("brain_009.dcm", "brain_010.dcm")),
    ("brain11", ("brain_005.dcm", "brain_006.dcm")),
    ("ct5n", ("2693", "3023")),
]
RULES = """
[[rule]]
name = "any"
jobs = ["segment"]
[[rule.segment]]
label = "Region"
box = [0.25, 0.25, 0.75, 0.75]
propagate = true
"""


def uid(*parts):
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_OID, "/".join(map(str, parts))).int)


def make_archive(root, count):
    folders = []
    for i in range(count):
        folder, files = BASES[i % len(BASES)]
        dst = root / f"s{i:03d}"
        dst.mkdir()
        for f in files:
            ds = pydicom.dcmread(DATA / "series" / folder / f)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(i, "st"), uid(i, "se")
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid(i, f)
            ds.save_as(dst / f)
        folders.append(dst)
    return folders


def timed(args, **kw):
    t0 = time.perf_counter()
    subprocess.run(list(map(str, args)), check=True, capture_output=True, **kw)
    return time.perf_counter() - t0


def batch(manifest, job, out, extra, rules=None):
    args = [sys.executable, "-m", "medfm.batch", "--manifest", manifest, "--job", job,
            "--out", out, *extra]
    if rules:
        args += ["--rule", rules]
    return timed(args)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--medfm", required=True)
    p.add_argument("--series", type=int, default=16)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    cpus = os.cpu_count()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="medfm-bench-"))
    ray = pathlib.Path(sys.executable).with_name("ray")
    try:
        folders = make_archive(tmp, a.series)
        frames = 2 * len(folders)
        manifest = tmp / "m.csv"
        manifest.write_text("path\n" + "".join(f"{f}\n" for f in folders))
        rules = tmp / "rules.toml"
        rules.write_text(RULES)
        port = 6500 + os.getpid() % 200
        subprocess.run([ray, "start", "--head", "--num-cpus", str(cpus), "--port", str(port),
                        "--include-dashboard=false", "--disable-usage-stats"],
                       check=True, capture_output=True)
        address = f"127.0.0.1:{port}"
        ray_one = ["--address", address, "--workers", "1", "--cpus-per-worker", "1"]
        ray_two = ["--address", address, "--workers", "2", "--cpus-per-worker",
                   str(max(0.5, (cpus - 1) / 2))]
        rows = []

        def loop(make):
            t0 = time.perf_counter()
            for k, f in enumerate(folders):
                subprocess.run(list(map(str, make(k, f))), check=True, capture_output=True)
            return time.perf_counter() - t0

        t = loop(lambda k, f: [a.medfm, "embed", f, "--out", tmp / "e.npy", "--meta",
                               tmp / "e.jsonl", "--cpu"])
        rows.append(("embed", "CLI loop (all threads)", frames / t, "frames/s"))
        for name, extra in [("batch --local (1 process, all threads)", ["--local"]),
                            ("batch, Ray 1 actor (1 CPU)", ray_one),
                            (f"batch, Ray 2 actors ({ray_two[-1]} CPU each)", ray_two)]:
            out = tmp / f"out-{len(rows)}"
            rows.append(("embed", name, frames / batch(manifest, "embed", out, extra),
                         "frames/s"))

        def prompts(k, f):
            import medfm

            s = medfm.read_series(f)
            mid, cols, rows_ = len(s) // 2, s.meta["cols"] - 1, s.meta["rows"] - 1
            path = tmp / f"p{k}.json"
            path.write_text(json.dumps({"segments": [{
                "label": "Region", "slice": str(s.paths[mid]), "propagate": True,
                "box": [0.25 * cols, 0.25 * rows_, 0.75 * cols, 0.75 * rows_]}]}))
            return path

        files = [prompts(k, f) for k, f in enumerate(folders)]
        t = loop(lambda k, f: [a.medfm, "segment", "--segments", files[k], "--series", f,
                               "--out", tmp / "seg.dcm", "--cpu"])
        rows.append(("segment", "CLI loop (all threads)", 60 * len(folders) / t,
                     "series/min"))
        for name, extra in [("batch --local", ["--local"]), ("batch, Ray 1 actor", ray_one),
                            ("batch, Ray 2 actors", ray_two)]:
            out = tmp / f"out-{len(rows)}"
            rows.append(("segment", name,
                         60 * len(folders) / batch(manifest, "segment", out, extra, rules),
                         "series/min"))

        image = DATA / "MR_small.dcm"
        cli, py, imp = [], [], []
        code = ("import medfm, sys; m = medfm.Model(device='cpu'); s = medfm.read_series(sys.argv[1]);"
                "k = m.segment(s, frame=0, box=(10, 10, 50, 50)); ")
        for _ in range(a.runs):
            cli.append(timed([a.medfm, "segment", image, "--box", "10,10,50,50", "--cpu",
                              "--out", tmp / "m.png"]))
            py.append(timed([sys.executable, "-c", code, image]))
            imp.append(timed([sys.executable, "-c", "import medfm"]))
        c, q, i = statistics.median(cli), statistics.median(py), statistics.median(imp)

        print(f"archive: {len(folders)} series, {frames} frames; {cpus} CPUs\n")
        print("| job | run | rate | vs CLI loop |\n|---|---|---|---|")
        base = {}
        for job, name, rate, unit in rows:
            base.setdefault(job, rate)
            print(f"| {job} | {name} | {rate:.2f} {unit} | {rate / base[job]:.2f}x |")
        print(f"\none image (MR_small, fp32, whole process, median of {a.runs}): "
              f"medfm segment {c:.3f} s, python Model+read_series+segment {q:.3f} s: "
              f"{q / c:.3f}x; of which starting Python and importing medfm (numpy) {i:.3f} s")
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
