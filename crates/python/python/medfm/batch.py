"""Archive batch: embed or segment every series of a manifest or a folder tree, on Ray.

    python -m medfm.batch --manifest series.csv --job embed --out DIR [--address auto]
    python -m medfm.batch --folder /archive --job segment --rule rules.toml --out DIR

Items are series: the manifest's column ``path`` (a series folder or a DICOM file;
relative paths are read from the manifest's folder), or each folder of ``--folder``'s tree
that holds files. Outputs in ``DIR``, each keyed by (series UID, job, weights sha256) and
written under a temporary name then renamed, so an output is whole or absent:

- ``embeddings/<series_uid>.<weights sha256[:16]>.parquet``: one row per frame
  (``study_uid``, ``series_uid``, ``sop_instance_uid``, ``frame``, ``model``,
  ``weights_sha256``, ``vector`` list<float32>); the folder reads as one Parquet dataset.
- ``seg/<series_uid>.dcm``: the SEG of the first rule with a segment job that matches the
  series (the node's ``[[rule]]`` tables); a series no rule matches gets none.
- ``errors.parquet`` (``path``, ``job``, ``kind``, ``reason``): the items that failed, each
  once; a bad item never stops the job.
- ``.medfm/``: the batch's records (which weights and rules the folder's outputs are of,
  which items are done, each item's error).

Kill anything at any time and run the same command again: what is done is skipped (an item
is done when its record and its output exist), nothing is written twice. The exit status
is 0 when every item is done or recorded as an error, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

JOBS = ("embed", "segment")
EMBEDDING_COLUMNS = (
    "study_uid",
    "series_uid",
    "sop_instance_uid",
    "frame",
    "model",
    "weights_sha256",
    "vector",
)


class BatchError(Exception):
    """Arguments or an output folder the batch cannot work with (exit status 2)."""


def manifest_items(manifest: str | os.PathLike) -> list[str]:
    """The ``path`` column of a CSV or Parquet manifest, relative paths resolved against
    the manifest's folder (made absolute), URLs as given, in the manifest's order, each
    once; empty cells passed over."""
    import pyarrow.csv
    import pyarrow.parquet

    manifest = Path(manifest)
    try:
        if manifest.suffix.lower() in (".parquet", ".pq"):
            table = pyarrow.parquet.read_table(manifest)
        else:
            table = pyarrow.csv.read_csv(manifest)
    except Exception as e:  # pyarrow raises its own and OSError
        raise BatchError(f"manifest {manifest}: {e}") from e
    if "path" not in table.column_names:
        raise BatchError(
            f"manifest {manifest}: no column 'path' (columns: {', '.join(table.column_names)})"
        )
    seen: dict[str, None] = {}
    for value in table.column("path").to_pylist():
        if value is None or not str(value).strip():
            continue
        value = str(value).strip()
        if "://" not in value:
            # Absolute, so an item's key does not depend on where the batch runs from.
            value = str((manifest.parent / value).absolute())
        seen.setdefault(value, None)
    return list(seen)


def folder_items(root: str | os.PathLike) -> list[str]:
    """Each folder under ``root`` (itself included) that directly holds a file (hidden
    ones aside), sorted: the usual archive layout of a folder per series."""
    root = Path(root)
    if not root.is_dir():
        raise BatchError(f"--folder {root}: not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(not f.startswith(".") for f in filenames):
            found.append(dirpath)
    return sorted(found)


def item_key(path: str) -> str:
    """An item's name in the records: the sha256 of its path as given."""
    return hashlib.sha256(path.encode()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` to ``path`` whole or not at all (the library's atomic write), its folder
    made first."""
    from medfm._medfm import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def _write_json(path: Path, value) -> None:
    _write_atomic(path, json.dumps(value, sort_keys=True).encode())


def _parquet(table) -> bytes:
    """``table`` as the bytes of a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class Layout:
    """Where a job's outputs and records live in the output folder."""

    out: Path
    job: str

    @property
    def records(self) -> Path:
        return self.out / ".medfm"

    def done(self, path: str) -> Path:
        return self.records / "done" / self.job / f"{item_key(path)}.json"

    def error(self, path: str) -> Path:
        return self.records / "errors" / self.job / f"{item_key(path)}.json"

    def embedding(self, series_uid: str, sha: str) -> Path:
        return self.out / "embeddings" / f"{series_uid}.{sha[:16]}.parquet"

    def seg(self, series_uid: str) -> Path:
        return self.out / "seg" / f"{series_uid}.dcm"

    def is_done(self, path: str) -> bool:
        """Its record and every output it names exist."""
        try:
            record = json.loads(self.done(path).read_text())
        except (OSError, ValueError):
            return False
        return all((self.out / o).exists() for o in record.get("outputs", []))


def claim(out: Path, job: str, weights_sha256: str, rules_text: str | None) -> None:
    """Record (once) which weights and rules the folder's outputs of ``job`` are of, and
    refuse a folder made with others: outputs are keyed by series UID within a folder, so
    two models' outputs must not mix there."""
    want = {"job": job, "weights_sha256": weights_sha256}
    if rules_text is not None:
        want["rules_sha256"] = hashlib.sha256(rules_text.encode()).hexdigest()
    path = out / ".medfm" / f"{job}.json"
    if path.exists():
        have = json.loads(path.read_text())
        if have != want:
            differs = sorted(k for k in want if have.get(k) != want[k])
            raise BatchError(
                f"{out} holds {job} outputs of other {' and '.join(differs)} "
                f"({path}); give another --out"
            )
        return
    _write_json(path, want)


class Worker:
    """One model, loaded once, doing items one at a time (a Ray actor, or in process)."""

    def __init__(
        self,
        job: str,
        out: str,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        rules: str | None = None,
    ):
        import medfm

        if job not in JOBS:
            raise BatchError(f"job {job!r}: use one of {', '.join(JOBS)}")
        self.layout = Layout(Path(out), job)
        self.model = medfm.Model(precision=precision, device=device, threads=threads)
        self.model_id = f"litemedsam-{self.model.precision or 'unpinned'}"
        self.rules = medfm.read_rules(rules) if job == "segment" else None
        (self.layout.out / ("embeddings" if job == "embed" else "seg")).mkdir(
            parents=True, exist_ok=True
        )

    def __call__(self, batch: dict) -> dict:
        """Ray Data's batch in (column ``path``), one row per item out."""
        rows = [self.process(str(p)) for p in batch["path"]]
        return {k: [r[k] for r in rows] for k in ("path", "status", "kind", "reason", "output")}

    def process(self, path: str) -> dict:
        """Do one item; never raises for the item's own faults: they are recorded."""
        import medfm

        layout = self.layout
        if layout.is_done(path):
            return _row(path, "skipped")
        try:
            output = self._run(path)
        except medfm.Error as e:
            return self._failed(path, e.kind, str(e))
        except OSError as e:
            return self._failed(path, "io", str(e))
        except Exception as e:  # noqa: BLE001 - a bug in one item must not kill the worker
            return self._failed(path, "internal", f"{type(e).__name__}: {e}")
        outputs = [] if output is None else [str(output.relative_to(layout.out))]
        _write_json(layout.done(path), {"path": path, "outputs": outputs})
        layout.error(path).unlink(missing_ok=True)
        return _row(path, "done" if output is not None else "no rule", output=outputs)

    def _failed(self, path: str, kind: str, reason: str) -> dict:
        _write_json(
            self.layout.error(path),
            {"path": path, "job": self.layout.job, "kind": kind, "reason": reason},
        )
        return _row(path, "error", kind=kind, reason=reason)

    def _run(self, path: str) -> Path | None:
        import medfm

        series = medfm.read_series(path)
        uid = series.meta["series_uid"]
        if self.layout.job == "embed":
            target = self.layout.embedding(uid, self.model.weights_sha256)
            if not target.exists():
                self._embed(series, target)
            return target
        target = self.layout.seg(uid)
        if target.exists():
            return target
        done = self.model.segment_rules(series, self.rules, str(target))
        return None if done is None else target

    def _embed(self, series, target: Path) -> None:
        import pyarrow as pa

        vectors = self.model.embed(series)
        frames = series.frames
        meta = series.meta
        n, dim = vectors.shape
        table = pa.table(
            {
                "study_uid": [meta["study_uid"]] * n,
                "series_uid": [meta["series_uid"]] * n,
                "sop_instance_uid": [uid for uid, _ in frames],
                "frame": pa.array([f for _, f in frames], pa.int32()),
                "model": [self.model_id] * n,
                "weights_sha256": [self.model.weights_sha256] * n,
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.reshape(-1), pa.float32()), dim
                ).cast(pa.list_(pa.float32())),
            }
        )
        _write_atomic(target, _parquet(table))


def _row(path, status, kind="", reason="", output=None) -> dict:
    return {
        "path": path,
        "status": status,
        "kind": kind,
        "reason": reason,
        "output": json.dumps(output or []),
    }


def write_errors(out: Path) -> int:
    """``errors.parquet`` from every job's error records in ``out``; the count."""
    import pyarrow as pa

    rows = []
    for record in sorted((out / ".medfm" / "errors").glob("*/*.json")):
        try:
            rows.append(json.loads(record.read_text()))
        except (OSError, ValueError):
            continue  # a record being replaced: the next run lists it
    table = pa.table(
        {k: pa.array([r[k] for r in rows], pa.string()) for k in ("path", "job", "kind", "reason")}
    )
    _write_atomic(out / "errors.parquet", _parquet(table))
    return len(rows)


@dataclass
class Summary:
    """What a run did: items in all, done now, skipped (done before), errors, no rule."""

    items: int = 0
    done: int = 0
    skipped: int = 0
    errors: int = 0
    no_rule: int = 0
    seconds: float = 0.0

    def add(self, status: str) -> None:
        if status == "done":
            self.done += 1
        elif status == "skipped":
            self.skipped += 1
        elif status == "error":
            self.errors += 1
        elif status == "no rule":
            self.no_rule += 1

    def line(self, job: str) -> str:
        return (
            f"medfm batch {job}: {self.items} items: {self.done} done, {self.skipped} "
            f"skipped (done before), {self.errors} errors, {self.no_rule} matched no rule; "
            f"{self.seconds:.1f} s"
        )


def run(
    items: Iterable[str],
    job: str,
    out: str | os.PathLike,
    *,
    rules: str | os.PathLike | None = None,
    precision: str = "fp32",
    device: str = "cpu",
    address: str | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    threads: int | None = None,
    local: bool = False,
) -> Summary:
    """Run ``job`` over ``items`` into ``out`` (on Ray unless ``local``); see the module."""
    import medfm

    start = time.monotonic()
    if job not in JOBS:
        raise BatchError(f"--job {job!r}: use one of {', '.join(JOBS)}")
    if (job == "segment") != (rules is not None):
        raise BatchError("--rule goes with --job segment, and segment needs it")
    items = list(dict.fromkeys(items))
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    rules_text = None
    if rules is not None:
        rules = str(Path(rules).absolute())
        medfm.read_rules(rules)  # a bad rules file is refused before any work
        rules_text = Path(rules).read_text()
    sha = medfm.pinned_sha256(precision)
    claim(out, job, sha, rules_text)
    layout = Layout(out, job)
    summary = Summary(items=len(items))
    todo = []
    for path in items:
        if layout.is_done(path):
            summary.skipped += 1
        else:
            todo.append(path)
    if threads is None and not local:
        threads = max(1, int(cpus_per_worker))  # an actor's share; --local: all threads
    kwargs = dict(
        job=job, out=str(out), precision=precision, device=device, threads=threads, rules=rules
    )
    if todo and local:
        worker = Worker(**kwargs)
        for path in todo:
            summary.add(worker.process(path)["status"])
    elif todo:
        from medfm.ray import map_items

        for row in map_items(todo, kwargs, address, workers, cpus_per_worker):
            summary.add(row["status"])
    write_errors(out)
    summary.seconds = time.monotonic() - start
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m medfm.batch",
        description="Embed or segment every series of a manifest or folder tree, on Ray.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="CSV or Parquet with a column 'path'")
    source.add_argument("--folder", help="a tree of series folders")
    p.add_argument("--job", required=True, choices=JOBS)
    p.add_argument("--out", required=True, help="output folder (local or shared filesystem)")
    p.add_argument("--rule", help="rules file ([[rule]] tables as in node.toml), for segment")
    p.add_argument("--address", help="Ray address (auto: a running cluster); else a local one")
    p.add_argument("--workers", type=int, default=1, help="model actors (default 1)")
    p.add_argument(
        "--cpus-per-worker",
        type=float,
        default=1.0,
        help="CPUs each actor reserves (default 1; leave the reads one CPU)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads per model (default: an actor's CPUs, rounded down, at least 1; "
        "with --local all)",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "int8", "int4"),
        help="weights (default fp32, as medfm embed and medfm segment)",
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu", "auto"))
    p.add_argument("--local", action="store_true", help="in this process, without Ray")
    args = p.parse_args(argv)
    import medfm

    try:
        if args.workers < 1 or not args.cpus_per_worker > 0:
            raise BatchError("--workers >= 1 and --cpus-per-worker > 0")
        items = manifest_items(args.manifest) if args.manifest else folder_items(args.folder)
        summary = run(
            items,
            args.job,
            args.out,
            rules=args.rule,
            precision=args.precision,
            device=args.device,
            address=args.address,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            threads=args.threads,
            local=args.local,
        )
    except (BatchError, medfm.BadInput) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except medfm.Error as e:
        print(f"error ({e.kind}): {e}", file=sys.stderr)
        return 3
    print(summary.line(args.job))
    return 0


if __name__ == "__main__":
    sys.exit(main())
