"""Measure stage: read a run's vectors from LanceDB, compute the metric tables, write them
to DuckDB (one transaction per run, replacing that run's earlier rows).

Transforms: recall@k is derived from per-query ranks in SQL
(``sql/transforms/retrieval_recall.sql``); the per-run headline table ``run_summary`` is
built in Polars (:func:`build_run_summary`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import polars as pl

from clipgeo.config import ANALYSIS_VERSION, DataHome
from clipgeo.geometry.gap import modality_gap
from clipgeo.geometry.separability import linear_separability, pca_project
from clipgeo.retrieval import retrieval_ranks
from clipgeo.store import catalog, vectors

log = logging.getLogger(__name__)

PCA_POINTS_PER_MODALITY = 2000


@dataclass(frozen=True)
class MeasureResult:
    run_id: str
    rows: dict[str, int]  # table -> rows written for this run


def _separability_rows(run_id: str, dataset_id: str, img: np.ndarray, txt: np.ndarray, kind: str, seed: int) -> list[dict]:
    rows = []
    for features, comps in (("full", None), ("pca2", 2)):
        res = linear_separability(img, txt, pca_components=comps, seed=seed)
        rows.append(
            {
                "run_id": run_id,
                "vectors": kind,
                "features": features,
                "train_dataset_id": dataset_id,
                "eval_dataset_id": dataset_id,
                "accuracy": res["accuracy"],
                "precision": res["precision"],
                "recall": res["recall"],
                "n_train": int(res["n_train"]),
                "n_test": int(res["n_test"]),
            }
        )
    return rows


def _pca_rows(run_id: str, rv: vectors.RunVectors, img_n: np.ndarray, txt_n: np.ndarray, seed: int) -> pl.DataFrame:
    """Top-2 PCs of the joint normalised vectors; at most PCA_POINTS_PER_MODALITY points each."""
    both = np.concatenate([img_n, txt_n])
    z = pca_project(both, 2)
    rng = np.random.default_rng(seed)
    frames = []
    for modality, ids, zz in (
        ("image", rv.image_ids, z[: len(img_n)]),
        ("text", rv.sample_ids, z[len(img_n) :]),
    ):
        keep = np.arange(len(ids))
        if len(keep) > PCA_POINTS_PER_MODALITY:
            keep = np.sort(rng.choice(len(ids), PCA_POINTS_PER_MODALITY, replace=False))
        frames.append(
            pl.DataFrame(
                {"run_id": run_id, "modality": modality, "item_id": ids[keep].tolist(), "pc1": zz[keep, 0], "pc2": zz[keep, 1]}
            )
        )
    return pl.concat(frames)


def build_run_summary(con, run_id: str) -> pl.DataFrame:
    """One row of headline figures for a run, joined and pivoted in Polars from the metric tables."""
    runs = catalog.query(
        con, "SELECT run_id, label, model_id, dataset_id, n_images, n_texts FROM runs WHERE run_id = ?", [run_id]
    )
    ret = catalog.query(con, "SELECT direction, k, recall FROM retrieval WHERE run_id = ? AND k IN (1, 5)", [run_id])
    ret_wide = (
        ret.with_columns(
            name=pl.format(
                "{}_recall_at_{}",
                pl.col("direction").replace({"text_to_image": "t2i", "image_to_text": "i2t"}),
                pl.col("k"),
            )
        )
        .select("name", "recall")
        .transpose(column_names="name")
    )
    gap = catalog.query(con, "SELECT gap FROM modality_gap WHERE run_id = ?", [run_id])
    sep = catalog.query(
        con,
        "SELECT features, accuracy FROM separability WHERE run_id = ? AND vectors = 'normalized'",
        [run_id],
    )
    sep_acc = {f: a for f, a in sep.iter_rows()}
    out = runs.with_columns(
        *(pl.lit(ret_wide[c][0] if c in ret_wide.columns else None, dtype=pl.Float64).alias(c)
          for c in ("t2i_recall_at_1", "t2i_recall_at_5", "i2t_recall_at_1", "i2t_recall_at_5")),
        pl.lit(gap["gap"][0] if gap.height else None, dtype=pl.Float64).alias("gap"),
        pl.lit(sep_acc.get("full"), dtype=pl.Float64).alias("separability_accuracy"),
        pl.lit(sep_acc.get("pca2"), dtype=pl.Float64).alias("separability_pca2_accuracy"),
        pl.lit(ANALYSIS_VERSION).alias("analysis_version"),
        pl.lit(datetime.now(timezone.utc).replace(tzinfo=None)).alias("updated_at"),
    )
    return out


def measure_run(home: DataHome, run_id: str, *, seed: int = 0) -> MeasureResult:
    """Compute retrieval, modality gap, separability and PCA points for one run and store them."""
    with catalog.session(home) as con:
        found = catalog.execute(con, "SELECT dataset_id, status, vectors_normalized FROM runs WHERE run_id = ?", [run_id])
    if not found:
        raise KeyError(f"run {run_id} is not in the catalog {home.catalog}")
    dataset_id, status, normalized_only = found[0]
    if status not in ("embedded", "measured"):
        raise RuntimeError(f"run {run_id} is {status!r}, not embedded: embed it before measuring")
    rv = vectors.read_run(home, run_id, normalized=bool(normalized_only))
    idx = rv.text_image_index
    if (idx < 0).any():
        raise RuntimeError(f"run {run_id}: {int((idx < 0).sum())} captions have no image vector")
    img_n, txt_n = vectors.l2_normalize(rv.images), vectors.l2_normalize(rv.texts)

    t2i, i2t = retrieval_ranks(img_n, txt_n, idx)
    ranks = pl.concat(
        [
            pl.DataFrame({"run_id": run_id, "direction": "text_to_image", "query_id": rv.sample_ids.tolist(), "rank": t2i.astype(np.int32)}),
            pl.DataFrame({"run_id": run_id, "direction": "image_to_text", "query_id": rv.image_ids.tolist(), "rank": i2t.astype(np.int32)}),
        ]
    )

    # Pairs: each image with its first caption (balanced classes, pair-aware split).
    pi, pt, _ = rv.first_pairs()
    g = modality_gap(rv.images, rv.texts, txt_image_index=idx)
    gap_row = {
        "run_id": run_id,
        "gap": g["gap"],
        "gap_raw": None if normalized_only else g["gap_raw"],
        "paired_distance": g.get("paired_distance"),
        "mean_paired_cos": g.get("mean_paired_cos"),
        "mean_unpaired_cos": g.get("mean_unpaired_cos"),
        "n_pairs": int(len(idx)),
    }
    sep_rows = _separability_rows(run_id, dataset_id, img_n[pi], txt_n[pt], "normalized", seed)
    if not normalized_only:
        sep_rows += _separability_rows(run_id, dataset_id, rv.images[pi], rv.texts[pt], "raw", seed)
    pca = _pca_rows(run_id, rv, img_n, txt_n, seed)

    where = {"run_id": run_id}
    with catalog.session(home) as con, catalog.transaction(con):
        written = {
            "retrieval_ranks": catalog.delete_insert(con, "retrieval_ranks", where, ranks),
            "modality_gap": catalog.delete_insert(con, "modality_gap", where, [gap_row]),
            "separability": catalog.delete_insert(con, "separability", where, sep_rows),
            "pca_points": catalog.delete_insert(con, "pca_points", where, pca),
        }
        catalog.execute(con, "DELETE FROM retrieval WHERE run_id = ?", [run_id])
        catalog.run_sql_file(con, "transforms/retrieval_recall.sql", {"run_id": run_id})
        written["retrieval"] = catalog.execute(con, "SELECT count(*) FROM retrieval WHERE run_id = ?", [run_id])[0][0]
        written["run_summary"] = catalog.delete_insert(con, "run_summary", where, build_run_summary(con, run_id))
        catalog.execute(con, 
            "UPDATE runs SET status = 'measured', analysis_version = ?, analyzed_at = current_timestamp,"
            " updated_at = current_timestamp WHERE run_id = ?",
            [ANALYSIS_VERSION, run_id],
        )
    log.info("run %s measured: %s", run_id, written)
    return MeasureResult(run_id, written)
