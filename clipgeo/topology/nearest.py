"""Nearest reference sample (Topological Perspectives, Fig. 1): how "training-like" each sample is.

For a query set ``Q`` and a reference set ``R`` of the *same modality* (e.g. MS COCO images
against a LAION-like reference), per query ``q``::

    max_cos(q) = max_{r ∈ R} q̂ · r̂,      nearest(q) = argmax_{r ∈ R} q̂ · r̂

Two implementations:

* :func:`nearest_reference` — exact, blocked numpy (a ``query_block × gallery_block`` tile of
  scores at a time, never |Q| × |R|).
* :func:`lancedb_nearest_reference` — LanceDB vector search over a table of the normalised
  reference vectors (:func:`reference_table`; cosine distance, ``max_cos = 1 − _distance``).
  ``method="exact"`` is a flat scan (``bypass_vector_index``); ``method="index"`` searches an
  IVF-PQ index (:func:`build_reference_index`, ``nprobes`` partitions, re-ranked exactly over
  ``refine_factor × k`` candidates) and reports its *recall@1* against the flat scan on a fixed-seed
  sample of the queries: the share whose index answer has the exact answer's cosine (ties count
  as hits). ``method="auto"`` is exact up to ``exact_max_rows`` reference rows and the index
  above (built on the spot when the table has none).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from clipgeo.core.arrays import check_matrix, normalize_rows, row_blocks
from clipgeo.topology.mixing import knn_cosine

__all__ = [
    "build_reference_index",
    "lancedb_nearest_reference",
    "nearest_reference",
    "reference_table",
]

log = logging.getLogger(__name__)


def nearest_reference(
    query: np.ndarray,
    reference: np.ndarray,
    *,
    query_block: int = 1024,
    gallery_block: int = 16384,
    dtype: type = np.float32,
) -> pl.DataFrame:
    """Exact nearest reference by cosine, blocked. Rows: ``query_index, nearest_index, max_cos``.

    ``max_cos(q) = max_{r ∈ R} q̂ · r̂``, ``nearest(q) = argmax_{r ∈ R} q̂ · r̂`` (module doc).

    Parameters
    ----------
    query : array-like, shape (n_query, d)
        Query vectors (raw; normalised here).
    reference : array-like, shape (n_ref, d)
        Reference vectors of the same modality.
    query_block, gallery_block : int
        Tile size of the blocked scores.
    dtype : numpy dtype
        Dtype of the scores (float32 by default: ``max_cos`` to about 1e-7).

    Returns
    -------
    polars.DataFrame
        One row per query: ``query_index`` int64, ``nearest_index`` int64 (row of
        ``reference``), ``max_cos`` float64 (at most 1).

    Examples
    --------
    >>> import numpy as np
    >>> nn = nearest_reference(np.array([[2.0, 0.1, 0.0], [0.0, 0.0, 5.0]]), np.eye(3))
    >>> nn["nearest_index"].to_list(), nn["max_cos"].round(4).to_list()   # 2 / √4.01 and 1
    ([0, 2], [0.9988, 1.0])
    """
    q = check_matrix(query, "query", min_rows=1)
    r = check_matrix(reference, "reference", min_rows=1)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"mismatched dimensions: query d={q.shape[1]}, reference d={r.shape[1]}")
    idx, cos = knn_cosine(r, 1, queries=q, exclude_self=False, query_block=query_block,
                          gallery_block=gallery_block, dtype=dtype)
    return pl.DataFrame({
        "query_index": np.arange(q.shape[0], dtype=np.int64),
        "nearest_index": idx[:, 0],
        "max_cos": np.minimum(cos[:, 0], 1.0),
    })


def _vector_table(vectors: np.ndarray, ids: np.ndarray) -> pa.Table:
    d = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
    return pa.table({
        "id": pa.array(ids, type=pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, d),
    })


def reference_table(db, name: str, reference: np.ndarray, *, ids: np.ndarray | None = None,
                    mode: str = "overwrite", block: int = 65536):
    """Create LanceDB table ``name`` of the L2-normalised reference vectors.

    ``db``: a ``lancedb`` connection or a directory path. Columns: ``id`` (int64; ``ids`` or the
    row number) and ``vector`` (``FixedSizeList<float32>[d]``). Written in blocks of ``block``
    rows. Returns the table.
    """
    import lancedb

    r = check_matrix(reference, "reference", min_rows=1)
    conn = lancedb.connect(str(db)) if isinstance(db, (str, Path)) else db
    ids = np.arange(r.shape[0], dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (r.shape[0],):
        raise ValueError(f"ids: expected shape ({r.shape[0]},), got {ids.shape}")
    table = None
    for sl in row_blocks(r.shape[0], block):
        chunk = _vector_table(normalize_rows(r[sl], "reference", np.float32), ids[sl])
        if table is None:
            table = conn.create_table(name, chunk, mode=mode)
        else:
            table.add(chunk)
    return table


def _open(table, table_name: str | None):
    if isinstance(table, (str, Path)):
        import lancedb

        if not table_name:
            raise ValueError("table_name is required when a path is given")
        return lancedb.connect(str(table)).open_table(table_name)
    return table


def _has_vector_index(table) -> bool:
    try:
        return any("vector" in list(getattr(ix, "columns", [])) for ix in table.list_indices())
    except Exception:  # pragma: no cover - defensive: older/newer lancedb shapes
        return False


def build_reference_index(table, *, table_name: str | None = None,
                          num_partitions: int | None = None,
                          num_sub_vectors: int | None = None) -> dict[str, float]:
    """Build an IVF-PQ cosine index on the table's ``vector`` column.

    Defaults: ``num_partitions = round(sqrt(n_rows))`` (at least 1), ``num_sub_vectors`` = the
    largest divisor of ``d`` that is at most ``d / 8`` (sub-vectors of 8+ dims; at least 1).
    Returns ``{"num_partitions", "num_sub_vectors", "n_rows"}``.
    """
    from lancedb.index import IvfPq

    t = _open(table, table_name)
    n = t.count_rows()
    d = t.schema.field("vector").type.list_size
    parts = max(1, int(round(math.sqrt(n)))) if num_partitions is None else int(num_partitions)
    if num_sub_vectors is None:
        target = max(1, d // 8)
        num_sub_vectors = max(k for k in range(1, target + 1) if d % k == 0)
    t.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=parts,
                                          num_sub_vectors=int(num_sub_vectors)))
    return {"num_partitions": float(parts), "num_sub_vectors": float(num_sub_vectors), "n_rows": float(n)}


def _search(t, q: np.ndarray, exact: bool, nprobes: int, refine_factor: int, batch: int):
    ids = np.empty(q.shape[0], dtype=np.int64)
    cos = np.empty(q.shape[0], dtype=np.float64)
    for sl in row_blocks(q.shape[0], batch):
        qb = q[sl]
        s = t.search(qb if qb.shape[0] > 1 else qb[0]).distance_type("cosine").limit(1)
        if exact:
            s = s.bypass_vector_index()
        else:
            s = s.nprobes(nprobes).refine_factor(refine_factor)
        res = s.select(["id", "_distance"]).to_arrow()
        qi = (res.column("query_index").to_numpy() if "query_index" in res.column_names
              else np.zeros(res.num_rows, dtype=np.int64))
        if res.num_rows != qb.shape[0] or np.unique(qi).size != qb.shape[0]:
            raise RuntimeError(f"LanceDB returned {res.num_rows} results for {qb.shape[0]} queries")
        ids[sl.start + qi] = res.column("id").to_numpy()
        cos[sl.start + qi] = 1.0 - res.column("_distance").to_numpy().astype(np.float64)
    return ids, np.minimum(cos, 1.0)


def lancedb_nearest_reference(
    table,
    query: np.ndarray,
    *,
    table_name: str | None = None,
    method: str = "auto",
    exact_max_rows: int = 100_000,
    nprobes: int = 20,
    refine_factor: int = 10,
    recall_sample: int = 1000,
    seed: int = 0,
    batch: int = 1024,
) -> tuple[pl.DataFrame, dict[str, float]]:
    """Nearest reference per query with LanceDB (module doc).

    ``table``: a LanceDB table from :func:`reference_table`, or a database directory with
    ``table_name``. ``method``: ``"exact"``, ``"index"`` or ``"auto"``.

    Returns ``(rows, info)``. ``rows``: ``query_index, nearest_id, max_cos, method``.
    ``info``: ``n_query, n_reference, index_used`` (1.0/0.0), ``recall_at_1`` (index vs exact on
    the sample; 1.0 for the exact method), ``recall_sample`` (queries checked),
    ``mean_cos_gap`` (mean exact − index max_cos on the sample), ``nprobes, refine_factor``.
    """
    if method not in ("auto", "exact", "index"):
        raise ValueError(f"method must be 'auto', 'exact' or 'index', got {method!r}")
    t = _open(table, table_name)
    q = check_matrix(query, "query", min_rows=1)
    d = t.schema.field("vector").type.list_size
    if q.shape[1] != d:
        raise ValueError(f"mismatched dimensions: query d={q.shape[1]}, reference table d={d}")
    qn = normalize_rows(q, "query", np.float32)
    n_ref = t.count_rows()
    use_index = method == "index" or (method == "auto" and n_ref > exact_max_rows)
    if use_index and not _has_vector_index(t):
        log.info("lancedb_nearest_reference: building an IVF-PQ index on %d rows", n_ref)
        build_reference_index(t)
    ids, cos = _search(t, qn, not use_index, nprobes, refine_factor, batch)
    info = {
        "n_query": float(q.shape[0]), "n_reference": float(n_ref),
        "index_used": 1.0 if use_index else 0.0, "recall_at_1": 1.0, "recall_sample": 0.0,
        "mean_cos_gap": 0.0, "nprobes": float(nprobes), "refine_factor": float(refine_factor),
    }
    if use_index and recall_sample > 0:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(q.shape[0], size=min(recall_sample, q.shape[0]), replace=False))
        ex_ids, ex_cos = _search(t, qn[pick], True, nprobes, refine_factor, batch)
        hit = (ids[pick] == ex_ids) | (cos[pick] >= ex_cos - 1e-6)
        info.update(recall_at_1=float(hit.mean()), recall_sample=float(pick.size),
                    mean_cos_gap=float(np.mean(ex_cos - cos[pick])))
    rows = pl.DataFrame({
        "query_index": np.arange(q.shape[0], dtype=np.int64),
        "nearest_id": ids,
        "max_cos": cos,
        "method": ["index" if use_index else "exact"] * q.shape[0],
    })
    return rows, info
