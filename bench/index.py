"""Search over an archive's embeddings at scale: medfm's Parquet index (`medfm.Index`:
pyarrow + numpy, exact cosine) against LanceDB on the same vectors, side by side in one run
(a benchmark, not a test; BENCHMARKS.md, "Embedding search at 1 M vectors").

    python bench/index.py [--vectors 1000000] [--dim 256] [--queries 20] [--k 10]

with the Python of a venv holding the medfm wheel and `lancedb` (docs/python.md). It writes
VECTORS unit vectors in medfm's embeddings schema (what `medfm.batch --job embed` writes:
one Parquet file per series, 250 frames a series; each series' frames near one direction,
as a series' slices are), then times:
- medfm.Index: loading the dataset, one query (median of QUERIES), resident memory;
- LanceDB (the same rows, the vector as a fixed-size list): the table's creation, an exact
  query (no index, a flat scan), an IVF-PQ index's build (LanceDB's default partitions and
  sub-vectors) and an indexed query (20 probes, refine x10), and the indexed query's
  recall@K against the exact answer.
Queries are stored vectors with noise (a slice like one indexed). Every number is printed
with the machine's load in the same run; the JSON line at the end is what BENCHMARKS.md
quotes.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import medfm

FRAMES = 250  # rows of one series file
SHA = "0" * 64


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def write_archive(folder, n, dim, rng):
    """n vectors in n / FRAMES series files; returns the matrix (for the queries)."""
    series = n // FRAMES
    centers = unit(rng.standard_normal((series, dim), dtype=np.float32))
    all_vectors = np.empty((series * FRAMES, dim), dtype=np.float32)
    for s in range(series):
        v = unit(centers[s] + 0.5 / np.sqrt(dim) * rng.standard_normal((FRAMES, dim), dtype=np.float32))
        all_vectors[s * FRAMES:(s + 1) * FRAMES] = v
        uid = f"1.2.826.0.1.3680043.8.498.{s + 1}"
        table = pa.table({
            "study_uid": [f"{uid}.1"] * FRAMES,
            "series_uid": [uid] * FRAMES,
            "sop_instance_uid": [f"{uid}.{f + 1}" for f in range(FRAMES)],
            "frame": pa.array([0] * FRAMES, pa.int32()),
            "model": ["litemedsam"] * FRAMES,
            "weights_sha256": [SHA] * FRAMES,
            "vector": pa.array(list(v), pa.list_(pa.float32())),
        })
        pq.write_table(table, folder / f"{uid}.{SHA[:16]}.parquet")
    return all_vectors


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    a = ap.parse_args()
    import lancedb

    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="bench-index-"))
    try:
        folder = work / "embeddings"
        folder.mkdir()
        secs, vectors = timed(lambda: write_archive(folder, a.vectors, a.dim, rng))
        n = len(vectors)
        print(f"{n} vectors of {a.dim} in {n // FRAMES} Parquet files written in {secs:.1f} s; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        picks = rng.choice(n, a.queries, replace=False)
        queries = unit(vectors[picks] + 0.5 / np.sqrt(a.dim) * rng.standard_normal((a.queries, a.dim), dtype=np.float32))
        result = {"vectors": n, "dim": a.dim, "k": a.k, "queries": a.queries}

        # medfm.Index
        before = rss_mb()
        load, index = timed(lambda: medfm.Index(folder))
        rss = rss_mb() - before
        exact, times = [], []
        for q in queries:
            t, hits = timed(lambda: index.search(q, a.k))
            times.append(t)
            exact.append([h["sop_instance_uid"] for h in hits])
        result["medfm"] = {"load_s": load, "query_s": statistics.median(times), "rss_mb": rss}
        # LanceDB searches a fixed-size list column; medfm's Parquet holds a list.
        table = index.keys.append_column("vector", pa.FixedSizeListArray.from_arrays(
            pa.array(index.vectors.reshape(-1)), a.dim))
        del index

        # LanceDB on the same rows
        db = lancedb.connect(str(work / "lance"))
        create, tbl = timed(lambda: db.create_table("emb", data=table, mode="overwrite"))
        del table

        def lance_query(q, indexed):
            s = tbl.search(q).distance_type("cosine").limit(a.k)
            if indexed:
                s = s.nprobes(20).refine_factor(10)
            return s.select(["sop_instance_uid", "_distance"]).to_arrow().column("sop_instance_uid").to_pylist()

        flat_times, flat_same = [], 0
        for q, want in zip(queries, exact):
            t, got = timed(lambda: lance_query(q, False))
            flat_times.append(t)
            flat_same += got == want
        # LanceDB's own choice of partitions and sub-vectors.
        build, _ = timed(lambda: tbl.create_index(metric="cosine", index_type="IVF_PQ"))
        ivf_times, hit = [], 0
        for q, want in zip(queries, exact):
            t, got = timed(lambda: lance_query(q, True))
            ivf_times.append(t)
            hit += len(set(got) & set(want))
        result["lancedb"] = {
            "version": lancedb.__version__, "create_s": create,
            "flat_query_s": statistics.median(flat_times), "flat_same_top_k": flat_same / a.queries,
            "ivf_pq_build_s": build, "ivf_pq_query_s": statistics.median(ivf_times),
            "ivf_pq_recall_at_k": hit / (a.k * a.queries),
        }
        result["load_average"] = os.getloadavg()[0]
        m, l = result["medfm"], result["lancedb"]
        print(f"medfm.Index   load {m['load_s']:.2f} s, query {m['query_s'] * 1e3:.1f} ms (exact), +{m['rss_mb']:.0f} MB resident")
        print(f"LanceDB {l['version']}  table {l['create_s']:.2f} s, flat query {l['flat_query_s'] * 1e3:.1f} ms "
              f"(same top {a.k} as medfm: {l['flat_same_top_k']:.0%} of queries)")
        print(f"  IVF-PQ      build {l['ivf_pq_build_s']:.1f} s, query {l['ivf_pq_query_s'] * 1e3:.1f} ms, "
              f"recall@{a.k} {l['ivf_pq_recall_at_k']:.3f}")
        print(f"  ratios      flat / medfm {l['flat_query_s'] / m['query_s']:.2f}x, "
              f"IVF-PQ / medfm {l['ivf_pq_query_s'] / m['query_s']:.2f}x per query; "
              f"peak resident {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
