"""`python -m medfm.batch` on a real local Ray cluster (`ray start --head --num-cpus 2`,
two model actors of half a CPU each, so Ray Data's own tasks keep a CPU).

The archive: 60 series made from slices of two of the repository's series (new study, series and
instance UIDs, the same pixels), one NM image no rule matches, and four planted bad
items. Each job is killed once (a model actor, then the driver) and run again; afterwards
every output exists once and equals the CLI's, and the errors table lists the planted items
and nothing else.
"""

import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pyarrow
import pyarrow.dataset
import pyarrow.parquet as pq
import pydicom
import pytest

import medfm

BASES = {  # name: (series folder in tests/data/series, the two files taken)
    "brain": ("brain11", ("brain_009.dcm", "brain_010.dcm")),
    "upper": ("brain11", ("brain_005.dcm", "brain_006.dcm")),
    "ct": ("ct5n", ("2693", "3023")),
}
# Copies of each base: 60 series (the manifest of at least 60), so a job is killed
# with most of its series still to do (the kill comes after 8 outputs); the four passes over
# the archive (two jobs, each against the CLI) take minutes on 2 cores.
COPIES = 20
ITEMS = len(BASES) * COPIES + 1 + 4  # the series, the NM image, the bad items
RULES = """
[[rule]]
name = "ct"
modality = "CT"
jobs = ["segment"]
[[rule.segment]]
label = "Body"
box = [0.25, 0.25, 0.75, 0.75]

[[rule]]
name = "mr"
modality = "MR"
jobs = ["segment"]
[[rule.segment]]
label = "Head"
box = [0.2, 0.2, 0.8, 0.8]
propagate = true
"""


def uid(*parts):
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_OID, "/".join(map(str, parts))).int)


@pytest.fixture(scope="module")
def archive(data, tmp_path_factory):
    """The manifest, the series folders by base, the planted bad items."""
    root = tmp_path_factory.mktemp("archive")
    series = {name: [] for name in BASES}
    for name, (folder, files) in BASES.items():
        for i in range(COPIES):
            dst = root / f"{name}{i:02d}"
            dst.mkdir()
            study, ser = uid(name, i, "study"), uid(name, i, "series")
            for f in files:
                ds = pydicom.dcmread(data / "series" / folder / f)
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, ser
                ds.SOPInstanceUID = uid(name, i, f)
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.save_as(dst / f)
            series[name].append(dst)
    us = root / "nm"
    us.mkdir()
    shutil.copy(data / "JPEG-LL.dcm", us / "nm.dcm")
    junk = root / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not DICOM")
    bad = [
        str(data / "bad/MR_truncated.dcm"),
        str(data / "bad/no_meta.dcm"),
        str(root / "missing"),
        str(junk),
    ]
    items = [str(p) for name in BASES for p in series[name]] + [str(us)] + bad
    order = np.random.default_rng(7).permutation(len(items))
    manifest = root / "manifest.csv"
    manifest.write_text("path\n" + "".join(items[k] + "\n" for k in order))
    rules = root / "rules.toml"
    rules.write_text(RULES)
    return {"root": root, "manifest": manifest, "rules": rules, "series": series,
            "us": us, "bad": sorted(bad)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray head with 2 CPUs, stopped after the module."""
    ray = pathlib.Path(sys.executable).with_name("ray")
    temp = pathlib.Path("/tmp") / f"medfm-ray-{os.getpid()}"  # socket paths must stay short
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    port = 6300 + os.getpid() % 200
    subprocess.run(
        [ray, "start", "--head", "--num-cpus", "2", "--port", str(port),
         "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(temp)],
        check=True, capture_output=True, env=env, timeout=120,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def batch(archive, cluster, out, job):
    args = [sys.executable, "-m", "medfm.batch", "--manifest", archive["manifest"],
            "--job", job, "--out", out, "--address", cluster,
            "--workers", "2", "--cpus-per-worker", "0.5"]
    if job == "segment":
        args += ["--rule", archive["rules"]]
    return subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc, timeout=600):
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}: {stderr[-4000:]}"
    return stdout


def wait_for(proc, count, timeout=300):
    """Until `count()` reaches 8, the job still running."""
    deadline = time.monotonic() + timeout
    while count() < 8:
        assert proc.poll() is None, f"the job ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.2)


def summary(line):
    """The counts of the batch's summary line."""
    found = re.search(r"(\d+) items: (\d+) done, (\d+) skipped \(done before\), (\d+) errors, "
                      r"(\d+) matched no rule", line)
    assert found, line
    return dict(zip(("items", "done", "skipped", "errors", "no_rule"), map(int, found.groups())))


def done_records(out, job):
    return len(list((out / ".medfm/done" / job).glob("*.json")))


def check_errors(out, archive, job):
    table = pq.read_table(out / "errors.parquet").to_pylist()
    mine = [r for r in table if r["job"] == job]
    assert sorted(r["path"] for r in mine) == archive["bad"], mine
    assert all(r["kind"] in ("bad-input", "io") and r["reason"] for r in mine), mine


def test_embed_survives_a_killed_worker_and_equals_the_cli(archive, cluster, cli, tmp_path):
    out = tmp_path / "out"
    proc = batch(archive, cluster, out, "embed")
    wait_for(proc, lambda: done_records(out, "embed"))
    actors = subprocess.run(["pgrep", "-f", "ray::MapWorker"], capture_output=True,
                            text=True).stdout.split()
    assert actors, "no model actor process found"
    os.kill(int(actors[0]), signal.SIGKILL)
    counts = summary(finish(proc))
    # The killed actor's item is retried: done then, or skipped if it was done already.
    assert counts["items"] == ITEMS and counts["done"] + counts["skipped"] == ITEMS - 4, counts
    assert counts["errors"] == 4, counts

    # Every series once, every frame once, each vector the CLI's.
    files = sorted((out / "embeddings").glob("*.parquet"))
    all_series = [p for name in BASES for p in archive["series"][name]] + [archive["us"]]
    assert len(files) == len(all_series)
    table = pyarrow.dataset.dataset(out / "embeddings").to_table().to_pylist()
    keys = [(r["sop_instance_uid"], r["frame"]) for r in table]
    assert len(keys) == len(set(keys)) == 2 * len(BASES) * COPIES + 1
    sha = medfm.pinned_sha256("fp32")
    assert {r["weights_sha256"] for r in table} == {sha}
    assert {r["model"] for r in table} == {"litemedsam-fp32"}
    npy, meta = tmp_path / "cli.npy", tmp_path / "cli.jsonl"
    cli("embed", *all_series, "--out", npy, "--meta", meta, "--cpu")
    want = np.load(npy)
    lines = [json.loads(x) for x in meta.read_text().splitlines()]
    by_key = {(m["instance_uid"], m["frame"]): want[i] for i, m in enumerate(lines)}
    assert set(by_key) == set(keys)
    for r in table:
        np.testing.assert_allclose(
            np.asarray(r["vector"], np.float32), by_key[(r["sop_instance_uid"], r["frame"])],
            atol=1e-6, rtol=0,
        )
    check_errors(out, archive, "embed")

    # Search over the dataset: a slice's copies (the same pixels) first, scored 1, in
    # the order of a brute-force dot product.
    index = medfm.Index(out / "embeddings")
    assert len(index) == len(table) and index.weights_sha256 == sha
    name, (_, slices) = next(iter(BASES.items()))
    first = uid(name, 0, slices[0])
    query = np.asarray(next(r for r in table if r["sop_instance_uid"] == first)["vector"])
    hits = index.search(query, k=COPIES + 1)
    brute = np.sort(np.stack([np.asarray(r["vector"], np.float32) for r in table]) @ query)[::-1]
    np.testing.assert_allclose([h["score"] for h in hits], brute[: COPIES + 1], atol=1e-5)
    copies = {uid(name, i, slices[0]) for i in range(COPIES)}
    assert {h["sop_instance_uid"] for h in hits if h["score"] > 1 - 1e-5} == copies, hits
    assert hits == medfm.search(query, k=COPIES + 1, index=out / "embeddings")
    with pytest.raises(medfm.BadInput, match="256 values"):
        index.search(query[:10])
    with pytest.raises(medfm.BadInput, match="k is a count"):
        index.search(query, k=0)
    with pytest.raises(medfm.IoError):
        medfm.Index(tmp_path / "nothing")

    # A rerun does nothing again and writes nothing new.
    stamps = {p: p.stat().st_mtime_ns for p in files}
    counts = summary(finish(batch(archive, cluster, out, "embed")))
    assert counts["skipped"] == len(all_series) and counts["done"] == 0, counts
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    check_errors(out, archive, "embed")


def test_segment_survives_a_killed_driver_and_equals_the_cli(archive, cluster, cli, tmp_path):
    out = tmp_path / "out"
    proc = batch(archive, cluster, out, "segment")
    wait_for(proc, lambda: len(list((out / "seg").glob("*.dcm"))) if (out / "seg").exists() else 0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    before = len(list((out / "seg").glob("*.dcm")))
    counts = summary(finish(batch(archive, cluster, out, "segment")))
    assert counts["skipped"] >= 8 and counts["errors"] == 4, counts
    assert counts["done"] + counts["skipped"] + counts["no_rule"] == ITEMS - 4, counts

    segs = sorted((out / "seg").glob("*.dcm"))
    series = {name: archive["series"][name] for name in BASES}
    assert len(segs) == len(BASES) * COPIES and before <= len(segs)
    check_errors(out, archive, "segment")
    us_uid = medfm.read_series(archive["us"]).meta["series_uid"]
    assert not (out / "seg" / f"{us_uid}.dcm").exists()

    # The first copy of each base against `medfm segment --segments` (the same bytes: a
    # SEG's UIDs derive from its inputs); every other copy has its masks.
    rules = {"CT": ("Body", [0.25, 0.25, 0.75, 0.75], False),
             "MR": ("Head", [0.2, 0.2, 0.8, 0.8], True)}
    for name, folders in series.items():
        s = medfm.read_series(folders[0])
        label, (x0, y0, x1, y1), propagate = rules[s.meta["modality"]]
        mid = len(s) // 2
        cols, rows = s.meta["cols"] - 1, s.meta["rows"] - 1
        prompts = tmp_path / f"{name}.json"
        prompts.write_text(json.dumps({"segments": [{
            "label": label, "slice": str(s.paths[mid]), "propagate": propagate,
            "box": [x0 * cols, y0 * rows, x1 * cols, y1 * rows]}]}))
        want = tmp_path / f"{name}.dcm"
        cli("segment", "--segments", prompts, "--series", folders[0], "--out", want, "--cpu")
        got = out / "seg" / f"{s.meta['series_uid']}.dcm"
        assert hashlib.sha256(got.read_bytes()).digest() == \
            hashlib.sha256(want.read_bytes()).digest(), name
        pixels = pydicom.dcmread(want).PixelData
        for folder in folders[1:]:
            copy = out / "seg" / f"{medfm.read_series(folder).meta['series_uid']}.dcm"
            assert pydicom.dcmread(copy).PixelData == pixels, folder


def test_the_cli_runs_the_batch_in_process(archive, tmp_path):
    """`medfm batch ... --local` (the CLI's front: this Python's `medfm.batch`) on a
    manifest of a series and a bad file."""
    manifest = tmp_path / "m.parquet"
    good, bad = archive["series"]["ct"][0], archive["bad"][0]
    pq.write_table(pyarrow.table({"path": [str(good), bad]}), manifest)
    out = tmp_path / "out"
    done = subprocess.run(
        [os.environ["MEDFM_BIN"], "batch", "--manifest", manifest, "--job", "embed",
         "--out", out, "--local"],
        env=dict(os.environ, MEDFM_PYTHON=sys.executable), capture_output=True, text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert summary(done.stdout) == {"items": 2, "done": 1, "skipped": 0, "errors": 1,
                                    "no_rule": 0}
    uid = medfm.read_series(good).meta["series_uid"]
    assert [p.name.split(".parquet")[0][:-17] for p in (out / "embeddings").iterdir()] == [uid]
    assert [r["path"] for r in pq.read_table(out / "errors.parquet").to_pylist()] == [bad]


def test_manifest_paths_are_absolute_and_once(tmp_path, monkeypatch):
    """Relative paths are read from the manifest's folder and made absolute (an item's key
    must not depend on the directory the batch runs from); URLs stay; repeats count once;
    a manifest without `path` is refused by name."""
    from medfm.batch import BatchError, manifest_items

    (tmp_path / "m").mkdir()
    manifest = tmp_path / "m" / "list.csv"
    manifest.write_text("path,note\nseries/a,x\n/abs/b,y\nseries/a,z\n,empty\nhttp://h/s/1,u\n")
    monkeypatch.chdir(tmp_path)
    want = [str(tmp_path / "m/series/a"), "/abs/b", "http://h/s/1"]
    assert manifest_items(pathlib.Path("m/list.csv")) == want
    monkeypatch.chdir(tmp_path / "m")
    assert manifest_items(pathlib.Path("list.csv")) == want
    (tmp_path / "bad.csv").write_text("file\nx\n")
    with pytest.raises(BatchError, match="no column 'path'"):
        manifest_items(tmp_path / "bad.csv")
