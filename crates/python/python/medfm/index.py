"""Search over what ``medfm.batch --job embed`` indexed: the Parquet dataset of
``OUT/embeddings`` (pyarrow and numpy, exact cosine similarity).

    index = medfm.Index("OUT/embeddings")            # loads the vectors once
    hits = index.search(model.embed(series)[k], k=5)  # list of dicts, best first
    hits = medfm.search(vector, k=5, index="OUT/embeddings")

``python -m medfm.index --index OUT/embeddings -k 5 [--weights-sha256 SHA] < query.json``
(a JSON list of numbers on stdin, the hits as a JSON list on stdout) is how ``medfm search``
reads a Parquet index: the command line computes the query, this module searches.

Vectors are unit norm, so cosine is a dot product: a query is one matrix-vector product
over the index (1 M vectors of 256 float32 are 1 GiB in memory and about 0.1 s a query
on one core). Only vectors of one model and weights are compared: an index that mixes
weights is refused unless ``weights_sha256`` picks one.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from medfm.errors import BadInput, IoError

KEYS = ("study_uid", "series_uid", "sop_instance_uid", "frame")


class Index:
    """The vectors of an embeddings dataset (a folder of Parquet files, or one file) and
    their keys, in memory."""

    def __init__(self, path: str | os.PathLike, weights_sha256: Optional[str] = None):
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        try:
            dataset = ds.dataset(os.fspath(path), format="parquet")
            table = dataset.to_table()
        except FileNotFoundError as e:
            raise IoError(f"index {path}: {e}") from e
        except Exception as e:  # pyarrow's own errors: not a Parquet dataset
            raise BadInput(f"index {path}: {e}") from e
        missing = [c for c in (*KEYS, "weights_sha256", "vector") if c not in table.column_names]
        if missing:
            raise BadInput(f"index {path}: no column {', '.join(missing)} (not a medfm index)")
        shas = set(table.column("weights_sha256").unique().to_pylist())
        if weights_sha256 is not None:
            table = table.filter(pc.equal(table.column("weights_sha256"), weights_sha256))
            if table.num_rows == 0:
                raise BadInput(
                    f"index {path} holds no vectors of weights {weights_sha256} (it holds "
                    f"{', '.join(sorted(shas)) or 'none'}): search with the model it was made with"
                )
        elif len(shas) > 1:
            raise BadInput(
                f"index {path} holds vectors of {len(shas)} weights ({', '.join(sorted(shas))}); "
                "pick one with weights_sha256="
            )
        self.weights_sha256 = weights_sha256 or (shas.pop() if shas else None)
        self.keys = table.select(list(KEYS))
        vectors = table.column("vector")
        del table
        n = len(vectors)
        # One copy of the values, chunk by chunk into the matrix (combining the chunks and
        # converting the type each copied the whole index again: 3.7 GB resident for 1 GB
        # of vectors at 1 M rows).
        parts = [pc.list_flatten(c).to_numpy(zero_copy_only=False) for c in vectors.chunks]
        del vectors
        flat = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.empty(0, np.float32)
        del parts
        if n and flat.size % n:
            raise BadInput(f"index {path}: vectors of different lengths")
        self.vectors = flat.reshape(n, flat.size // n if n else 0)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, query, k: int = 10) -> list[dict]:
        """The ``k`` entries most similar to ``query`` (a vector as ``Model.embed`` gives
        one), best first: their keys and ``score`` (cosine)."""
        try:
            q = np.asarray(query, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise BadInput(f"the query is not a vector of numbers: {e}") from e
        if q.ndim != 1 or q.shape[0] != self.vectors.shape[1]:
            raise BadInput(
                f"the query is a vector of {self.vectors.shape[1]} values; got shape {q.shape}"
            )
        if not isinstance(k, int) or k < 1:
            raise BadInput(f"k is a count >= 1; got {k!r}")
        norm = float(np.linalg.norm(q))
        if not np.isfinite(norm) or norm == 0:
            raise BadInput("the query vector is zero or not finite")
        scores = self.vectors @ (q / norm)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.array([], dtype=int)
        top = top[np.lexsort((top, -scores[top]))]  # best first; ties by position
        rows = self.keys.take(top).to_pylist()
        for row, i in zip(rows, top):
            row["score"] = float(scores[i])
        return rows


def search(query, k: int = 10, *, index: str | os.PathLike) -> list[dict]:
    """``Index(index).search(query, k)``: load the index and search it once."""
    return Index(index).search(query, k)


def main(argv: list[str] | None = None) -> int:
    """The search behind ``medfm search INDEX QUERY`` for a Parquet index: the query vector
    (JSON) on stdin, the hits (JSON) on stdout. Exit 0, 2 for bad input (``medfm.BadInput``),
    5 when reading failed (``medfm.IoError``), as the command line's codes."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m medfm.index", description=main.__doc__)
    p.add_argument("--index", required=True, help="a Parquet embeddings dataset or file")
    p.add_argument("-k", type=int, default=10, help="number of results")
    p.add_argument("--weights-sha256", help="only vectors of these weights")
    a = p.parse_args(argv)
    try:
        try:
            query = json.load(sys.stdin)
        except ValueError as e:
            raise BadInput(f"the query on stdin is not a JSON list of numbers: {e}") from e
        hits = Index(a.index, a.weights_sha256).search(query, a.k)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (IoError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 5
    json.dump(hits, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
