"""DICOMweb URLs as series: `medfm.read_series(URL)` and URLs in a batch manifest, against a
real Orthanc with its DICOMweb plugin (as tests/dicomweb_orthanc.rs starts it), with HTTP
basic authentication on, on 127.0.0.1."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

import medfm

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import orthanc as local_orthanc  # noqa: E402

USER = "medfm:s3cret-pass"


def authorized(url, data=None):
    return local_orthanc.request(url, data, user=USER)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, data):
    """Orthanc holding tests/data/series/brain11, basic auth on: (DICOMweb root, study URL,
    series URL, the series' local folder)."""
    proc, base = local_orthanc.start(tmp_path_factory.mktemp("orthanc"), user=USER)
    try:
        folder = data / "series/brain11"
        for f in sorted(folder.glob("*.dcm")):
            authorized(f"{base}/instances", f.read_bytes())
        meta = medfm.read_series(folder).meta
        root = f"{base}/dicom-web"
        study = f"{root}/studies/{meta['study_uid']}"
        yield root, study, f"{study}/series/{meta['series_uid']}", folder
    finally:
        local_orthanc.stop(proc)


def test_a_series_url_reads_as_its_files(orthanc):
    _, study, url, folder = orthanc
    local = medfm.read_series(folder)
    for remote in (medfm.read_series(url, user=USER),
                   medfm.read_series(study, local.meta["series_uid"], user=USER)):
        assert remote.frames == local.frames
        assert remote.uids == local.uids
        assert remote.meta == local.meta
        assert remote.spacing == local.spacing
        np.testing.assert_array_equal(remote.volume, local.volume)


def test_credentials_from_the_environment_and_never_shown(orthanc, monkeypatch):
    _, _, url, folder = orthanc
    monkeypatch.delenv("MEDFM_DICOMWEB_TOKEN", raising=False)
    monkeypatch.delenv("MEDFM_DICOMWEB_USER", raising=False)
    with pytest.raises(medfm.BadInput, match="HTTP 401") as refused:
        medfm.read_series(url)
    assert "credentials" in str(refused.value)
    with pytest.raises(medfm.BadInput, match="HTTP 401") as wrong:
        medfm.read_series(url, user="medfm:wrong-pass")
    assert "wrong-pass" not in str(wrong.value)
    monkeypatch.setenv("MEDFM_DICOMWEB_USER", USER)
    assert medfm.read_series(url).uids == medfm.read_series(folder).uids
    with pytest.raises(medfm.BadInput, match="not both"):
        medfm.read_series(url, token="t", user=USER)
    with pytest.raises(medfm.BadInput, match="not for a path"):
        medfm.read_series(folder, user=USER)


def test_bad_urls_raise_their_kind(orthanc):
    root, study, url, _ = orthanc
    with pytest.raises(medfm.BadInput, match="HTTP 404"):
        medfm.read_series(f"{study}/series/1.2.3.4", user=USER)
    with pytest.raises(medfm.BadInput, match="name a study"):
        medfm.read_series(root, user=USER)
    with pytest.raises(medfm.BadInput, match="no image of series 1.2.3"):
        medfm.read_series(study, "1.2.3", user=USER)
    closed = f"http://127.0.0.1:{local_orthanc.free_port()}/dicom-web/studies/1/series/2"
    with pytest.raises(medfm.IoError, match="is the server running"):
        medfm.read_series(closed)


@pytest.fixture(scope="module")
def url_batch(orthanc, tmp_path_factory):
    """`medfm.batch --job embed --local` over a manifest of the series URL (credentials from
    the environment) and a URL of no series: (output folder, the bad URL, the run)."""
    _, study, url, _ = orthanc
    work = tmp_path_factory.mktemp("url-batch")
    missing = f"{study}/series/1.2.3.4"
    manifest = work / "m.csv"
    manifest.write_text(f"path\n{url}\n{missing}\n")
    out = work / "out"
    env = dict(os.environ, MEDFM_DICOMWEB_USER=USER)
    env.pop("MEDFM_DICOMWEB_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-m", "medfm.batch", "--manifest", str(manifest), "--job", "embed",
         "--out", str(out), "--local"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    return out, missing, done


def test_batch_embeds_series_urls(orthanc, url_batch, model_fp32):
    """The URL's vectors are the local files' (which equal `medfm embed`'s, test_medfm); the
    bad URL is the one error, its reason the server's 404, no credential in it."""
    _, _, _, folder = orthanc
    out, missing, done = url_batch
    assert done.returncode == 0, done.stderr
    assert "2 items: 1 done, 0 skipped (done before), 1 errors" in done.stdout, done.stdout
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert [(e["path"], e["kind"]) for e in errors] == [(missing, "bad-input")]
    assert "HTTP 404" in errors[0]["reason"]
    assert USER.split(":")[1] not in json.dumps(errors)
    rows = pq.read_table(out / "embeddings").to_pylist()
    local = medfm.read_series(folder)
    want = dict(zip(local.frames, model_fp32.embed(local)))
    assert len(rows) == len(want)
    for r in rows:
        np.testing.assert_allclose(
            np.asarray(r["vector"], np.float32),
            want[(r["sop_instance_uid"], r["frame"])], atol=1e-6, rtol=0)


def test_cli_search_reads_the_parquet_index(orthanc, url_batch, model_fp32, tmp_path):
    """`medfm search OUT/embeddings QUERY` (the CLI's query vector, the package's Parquet
    search): the hits of `medfm.Index` for the same vector; the query's own slice first."""
    _, _, _, folder = orthanc
    out, _, _ = url_batch
    local = medfm.read_series(folder)
    k = 5
    query = sorted(folder.glob("*.dcm"))[3]
    query_uid = medfm.read_series(query).uids[0]
    env = dict(os.environ, MEDFM_PYTHON=sys.executable)
    binary = os.environ["MEDFM_BIN"]
    done = subprocess.run(
        [binary, "search", str(out / "embeddings"), str(query), "-k", str(k), "--json", "--cpu"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    vector = model_fp32.embed(local)[local.uids.index(query_uid)]
    want = medfm.Index(out / "embeddings").search(vector, k)
    assert [h["entry"]["sop_instance_uid"] for h in hits] == [w["sop_instance_uid"] for w in want]
    assert hits[0]["entry"]["sop_instance_uid"] == query_uid and hits[0]["score"] > 0.9999
    for h, w in zip(hits, want):
        assert abs(h["score"] - w["score"]) < 1e-5
        assert h["entry"]["series_uid"] == w["series_uid"] and h["entry"]["frame"] == w["frame"]
    text = subprocess.run([binary, "search", str(out / "embeddings"), str(query), "--cpu"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert text.returncode == 0 and query_uid in text.stdout.splitlines()[0], text.stderr
    # Bad input through the front: a model the index was not made with; a k of 0.
    for extra, needle in ((["--model", "dinov2:/nowhere"], "--model litemedsam"),
                          (["-k", "0"], "k is a count")):
        bad = subprocess.run([binary, "search", str(out / "embeddings"), str(query), *extra, "--cpu"],
                             env=env, capture_output=True, text=True, timeout=600)
        assert bad.returncode == 2 and needle in bad.stderr, (extra, bad.stderr)
