"""Import precomputed embeddings (the clip-retrieval / LAION release layout) as a run.

No model is involved: the vectors are streamed part by part, chunk by chunk, into the
run's LanceDB table in one commit, and the samples (ids, captions, URLs from the
metadata) into the catalog. Whether the vectors were already L2-normalised is detected
on a sample and recorded in ``runs.vectors_normalized``; raw-only measurements are then
reported as unavailable instead of being computed on normalised vectors.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

import clipgeo
from clipgeo.core.config import DataHome
from clipgeo.sources.base import Reject
from clipgeo.sources.embeddings import detect_normalized, iter_embedding_chunks, source_dtype
from clipgeo.store import catalog, vectors
from clipgeo.store.scratch import scratch

log = logging.getLogger(__name__)


def import_embeddings(home: DataHome, root: Path, *, name: str | None = None, chunk_rows: int = 65536) -> str:
    """Import ``root`` (``img_emb/``, ``text_emb/``, ``metadata/``) as a run; returns its run id."""
    from clipgeo.core.memory import bound_heap

    bound_heap()
    root = Path(root).resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    dataset_id = f"{name or 'embeddings'}-{digest}"
    model_id = f"imported@{dataset_id}"
    run_id = "r" + hashlib.sha1(f"{model_id}|{dataset_id}|import".encode()).hexdigest()[:12]
    normalized = detect_normalized(root)
    dtype = source_dtype(root)  # float16 releases stay float16 in Lance (one copy, no normalised column)
    with scratch(home, f"import-{dataset_id}") as work:
        return _import(home, root, work, dataset_id=dataset_id, model_id=model_id, run_id=run_id,
                       normalized=normalized, dtype=dtype, chunk_rows=chunk_rows)


SAMPLE_SCHEMA = pa.schema([("dataset_id", pa.string()), ("sample_id", pa.string()), ("image_id", pa.string()),
                           ("image_ref", pa.string()), ("caption", pa.string())])


def _import(home: DataHome, root: Path, work: Path, *, dataset_id: str, model_id: str, run_id: str,
            normalized: bool, dtype: str, chunk_rows: int) -> str:
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    samples_path = work / "samples.parquet"
    rejects: list[Reject] = []
    state = {"dim": None, "n": 0}

    def batches() -> Iterator[pa.RecordBatch]:
        for chunk in iter_embedding_chunks(root, chunk_rows=chunk_rows, keep_float16=dtype == "float16"):
            rejects.extend(chunk.rejects)
            if not len(chunk):
                continue
            state["dim"] = chunk.img.shape[1]
            state["n"] += len(chunk)
            caps = chunk.captions or [None] * len(chunk)
            urls = chunk.urls or [None] * len(chunk)
            samples.write_table(pa.table({
                "dataset_id": [dataset_id] * len(chunk), "sample_id": chunk.sample_ids, "image_id": chunk.image_ids,
                "image_ref": [u or "" for u in urls], "caption": [c or "" for c in caps],
            }, schema=SAMPLE_SCHEMA))
            yield from vectors.record_batches(run_id, image_ids=chunk.image_ids, images=chunk.img,
                                              sample_ids=chunk.sample_ids, text_image_ids=chunk.image_ids, texts=chunk.txt,
                                              dtype=dtype)

    # the samples' rows go to Parquet chunk by chunk as the vectors stream (no O(N) rows in memory)
    with pq.ParquetWriter(samples_path, SAMPLE_SCHEMA) as samples:
        gen = batches()
        first = next(gen, None)
        if first is None:
            raise ValueError(f"{root}: no importable vectors ({len(rejects)} rejected: "
                             f"{'; '.join(sorted({r.reason for r in rejects})[:3])})")
        dim = first.schema.field("vector").type.list_size

        def all_batches() -> Iterator[pa.RecordBatch]:
            yield first
            yield from gen

        vectors.write_run_batches(home, run_id, dim, all_batches())
    n = state["n"]
    with catalog.session(home) as con, catalog.transaction(con):
        catalog.delete_insert(con, "datasets", {"dataset_id": dataset_id}, [{
            "dataset_id": dataset_id, "source": "embeddings", "split": None, "location": str(root),
            "params": '{"root": "%s", "normalized": %s}' % (root, str(normalized).lower()),
            "n_images": n, "n_samples": n, "n_rejects": len(rejects),
        }])
        catalog.delete_insert(con, "samples", {"dataset_id": dataset_id}, catalog.ParquetRows((str(samples_path),)))
        catalog.delete_insert(con, "models", {"model_id": model_id}, [{
            "model_id": model_id, "model_name": "imported", "pretrained": str(root), "embed_dim": dim,
        }])
        catalog.delete_insert(con, "runs", {"run_id": run_id}, [{
            "run_id": run_id, "model_id": model_id, "dataset_id": dataset_id,
            "label": f"imported embeddings {root.name} ({'normalised' if normalized else 'raw'})",
            "status": "embedded", "vectors_table": vectors.table_name(run_id), "vectors_normalized": normalized,
            "n_images": n, "n_texts": n, "embed_seconds": time.perf_counter() - t0, "device": "import",
            "code_version": clipgeo.__version__,
        }])
        catalog.execute(con, "DELETE FROM rejects WHERE dataset_id = ?", [dataset_id])
        catalog.insert_rejects(con, [
            {"dataset_id": dataset_id, "run_id": run_id, "item_ref": r.item_ref, "stage": r.stage, "reason": r.reason,
             "sample_id": r.sample_id} for r in rejects
        ])
    log.info("imported %d pairs from %s as run %s (%s vectors, %d rejects)", n, root, run_id,
             "normalised" if normalized else "raw", len(rejects))
    return run_id
