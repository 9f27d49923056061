"""Measure stage: read a run's vectors from LanceDB, compute the metric tables, write them
to DuckDB (one transaction per run, replacing that run's earlier rows).

Measurements are grouped in *sections* (:data:`SECTIONS`), each filling a few tables. A
section that does not apply (a raw-vector metric on imported normalised vectors) is
``skipped`` with its reason; one that raises is ``failed`` with the error; the others
still land. ``measure_sections`` records the outcome of each, and a failed or skipped
section's tables hold no rows for the run (never stale ones), so reports can say what is
missing and why.

Transforms: recall@k is derived from per-query ranks in SQL
(``sql/transforms/retrieval_recall.sql``); the headline figures are the view ``v_headline``
(``sql/views/50_v_headline.sql``), their one definition.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

from clipgeo.config import ANALYSIS_VERSION, DataHome
from clipgeo.geometry.gap import modality_gap
from clipgeo.geometry.separability import linear_separability, pca_project
from clipgeo.retrieval import retrieval_ranks
from clipgeo.store import catalog, vectors

log = logging.getLogger(__name__)

PCA_POINTS_PER_MODALITY = 2000


class Skip(Exception):
    """Raised by a section that does not apply to a run; the message says why."""


@dataclass
class RunData:
    """What every section receives: a run's vectors and the derived arrays they share."""

    run_id: str
    dataset_id: str
    rv: vectors.RunVectors
    normalized_only: bool
    logit_scale: float | None
    seed: int = 0
    reference: "RunData | None" = None   # the same model on the training-like dataset
    options: dict = field(default_factory=dict)  # e.g. umap_grid=True
    cache: dict = field(default_factory=dict)    # results one section hands to a later one

    @cached_property
    def img_n(self) -> np.ndarray:
        return vectors.l2_normalize(self.rv.images)

    @cached_property
    def txt_n(self) -> np.ndarray:
        return vectors.l2_normalize(self.rv.texts)

    @cached_property
    def idx(self) -> np.ndarray:
        return self.rv.text_image_index

    @cached_property
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Each image with its first caption: row indices (image rows, text rows)."""
        pi, pt, _ = self.rv.first_pairs()
        return pi, pt

    def require_raw(self, what: str) -> None:
        if self.normalized_only:
            raise Skip(f"{what} needs raw (pre-normalisation) vectors; this run only has L2-normalised ones")


Rows = Any  # polars DataFrame, pyarrow Table or a list of dicts


@dataclass(frozen=True)
class Section:
    name: str
    tables: tuple[str, ...]
    fn: Callable[[RunData], Mapping[str, Rows]]


@dataclass(frozen=True)
class MeasureResult:
    run_id: str
    rows: dict[str, int]  # table -> rows written for this run
    sections: dict[str, str] = field(default_factory=dict)  # section -> ok | skipped | failed


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


def _retrieval(d: RunData) -> dict[str, Rows]:
    rr = retrieval_ranks(d.rv.images, d.rv.texts, d.idx)  # exact cosines of the stored vectors
    d.cache["retrieval_ranks"] = rr  # the one ranking every later section uses (per-cluster top-1)
    ranks = pl.concat([
        pl.DataFrame({"run_id": d.run_id, "direction": "text_to_image", "query_id": d.rv.sample_ids.tolist(),
                      "rank": rr.t2i.astype(np.int32), "ties": rr.t2i_ties.astype(np.int32)}),
        pl.DataFrame({"run_id": d.run_id, "direction": "image_to_text", "query_id": d.rv.image_ids.tolist(),
                      "rank": rr.i2t.astype(np.int32), "ties": rr.i2t_ties.astype(np.int32)}),
    ])
    return {"retrieval_ranks": ranks}


def _gap(d: RunData) -> dict[str, Rows]:
    g = modality_gap(d.rv.images, d.rv.texts, txt_image_index=d.idx)
    return {"modality_gap": [{
        "run_id": d.run_id,
        "gap": g["gap"],
        "gap_raw": None if d.normalized_only else g["gap_raw"],
        "paired_distance": g.get("paired_distance"),
        "mean_paired_cos": g.get("mean_paired_cos"),
        "mean_unpaired_cos": g.get("mean_unpaired_cos"),
        "n_pairs": int(len(d.idx)),
    }]}


def _separability(d: RunData) -> dict[str, Rows]:
    pi, pt = d.pairs
    rows = _separability_rows(d.run_id, d.dataset_id, d.img_n[pi], d.txt_n[pt], "normalized", d.seed)
    if not d.normalized_only:
        rows += _separability_rows(d.run_id, d.dataset_id, d.rv.images[pi], d.rv.texts[pt], "raw", d.seed)
    return {"separability": rows}


def _pca(d: RunData) -> dict[str, Rows]:
    return {"pca_points": _pca_rows(d.run_id, d.rv, d.img_n, d.txt_n, d.seed)}


CORE_SECTIONS = [
    Section("retrieval", ("retrieval_ranks", "retrieval"), _retrieval),
    Section("modality_gap", ("modality_gap",), _gap),
    Section("separability", ("separability",), _separability),
    Section("pca", ("pca_points",), _pca),
]


def all_sections() -> list[Section]:
    """Every section, in the order they run (the suites register theirs in their modules)."""
    out = list(CORE_SECTIONS)
    for mod in ("clipgeo.stages.measure_geometry", "clipgeo.stages.measure_topology"):
        try:
            module = __import__(mod, fromlist=["SECTIONS"])
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            continue
        out += module.SECTIONS
    return out


def _run_section(sec: Section, data: RunData) -> tuple[str, str | None, dict[str, Rows], float]:
    t0 = time.perf_counter()
    try:
        out = dict(sec.fn(data))
        status, message = "ok", None
    except Skip as exc:
        out, status, message = {}, "skipped", str(exc)
    except Exception as exc:  # a failing section must not take the others down
        log.warning("run %s: section %s failed: %s", data.run_id, sec.name, exc)
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        out, status, message = {}, "failed", tb[:2000]
    unknown = set(out) - set(sec.tables)
    if unknown:
        raise RuntimeError(f"section {sec.name} returned rows for undeclared tables {sorted(unknown)}")
    return status, message, out, time.perf_counter() - t0


def _load_run(home: DataHome, run_id: str) -> tuple[str, bool, float | None, vectors.RunVectors]:
    with catalog.session(home) as con:
        found = catalog.execute(
            con,
            "SELECT r.dataset_id, r.status, r.vectors_normalized, m.logit_scale FROM runs r"
            " LEFT JOIN models m USING (model_id) WHERE run_id = ?",
            [run_id],
        )
    if not found:
        raise KeyError(f"run {run_id} is not in the catalog {home.catalog}")
    dataset_id, status, normalized_only, logit_scale = found[0]
    if status not in ("embedded", "measured"):
        raise RuntimeError(f"run {run_id} is {status!r}, not embedded: embed it before measuring")
    rv = vectors.read_run(home, run_id, normalized=bool(normalized_only))
    if (rv.text_image_index < 0).any():
        raise RuntimeError(f"run {run_id}: {int((rv.text_image_index < 0).sum())} captions have no image vector")
    return dataset_id, bool(normalized_only), logit_scale, rv


def find_reference_run(home: DataHome, run_id: str) -> str | None:
    """The same model on the training-like dataset: the ``train`` split of the same source
    (``<name>:train`` for a run on ``<name>:<split>``), when it has been embedded."""
    with catalog.session(home) as con:
        rows = catalog.execute(
            con,
            "SELECT ref.run_id FROM runs r JOIN runs ref ON ref.model_id = r.model_id AND ref.run_id <> r.run_id"
            " WHERE r.run_id = ? AND ref.status IN ('embedded', 'measured')"
            " AND split_part(ref.dataset_id, ':', 1) = split_part(r.dataset_id, ':', 1)"
            " AND split_part(ref.dataset_id, ':', 2) = 'train' AND split_part(r.dataset_id, ':', 2) <> 'train'",
            [run_id],
        )
    return rows[0][0] if rows else None


def measure_run(home: DataHome, run_id: str, *, seed: int = 0, sections: Sequence[str] | None = None,
                reference_run_id: str | None = None, umap_grid: bool = False) -> MeasureResult:
    """Compute every section (or those named) for one run and store them in one transaction.

    ``reference_run_id``: the same model on a training-like dataset, for the nearest-reference
    and cross-dataset separability sections (default: found by :func:`find_reference_run`).
    ``umap_grid``: also fit the UMAP hyperparameter grid.
    """
    dataset_id, normalized_only, logit_scale, rv = _load_run(home, run_id)
    reference = None
    ref_id = reference_run_id or find_reference_run(home, run_id)
    if ref_id:
        r_dataset, r_norm, r_scale, r_rv = _load_run(home, ref_id)
        reference = RunData(ref_id, r_dataset, r_rv, r_norm, r_scale, seed)
    data = RunData(run_id, dataset_id, rv, normalized_only, logit_scale, seed, reference,
                   {"umap_grid": umap_grid, "lance_dir": str(home.lance)})
    chosen = all_sections()
    if sections is not None:
        known = {s.name for s in chosen}
        bad = sorted(set(sections) - known)
        if bad:
            raise ValueError(f"unknown sections {bad}; known: {sorted(known)}")
        chosen = [s for s in chosen if s.name in sections]
    results = [(sec, *_run_section(sec, data)) for sec in chosen]

    where = {"run_id": run_id}
    written: dict[str, int] = {}
    with catalog.session(home) as con, catalog.transaction(con):
        for sec, status_, message, out, seconds in results:
            for table in sec.tables:
                written[table] = catalog.delete_insert(con, table, where, out.get(table, []))
            catalog.delete_insert(con, "measure_sections", {"run_id": run_id, "section": sec.name}, [{
                "run_id": run_id, "section": sec.name, "status": status_, "message": message, "seconds": seconds,
                "tables": ",".join(sec.tables), "analysis_version": ANALYSIS_VERSION,
            }])
            if sec.name == "retrieval" and status_ == "ok":
                catalog.execute(con, "DELETE FROM retrieval WHERE run_id = ?", [run_id])
                catalog.run_sql_file(con, "transforms/retrieval_recall.sql", {"run_id": run_id})
                written["retrieval"] = catalog.execute(con, "SELECT count(*) FROM retrieval WHERE run_id = ?", [run_id])[0][0]
        catalog.execute(
            con,
            "UPDATE runs SET status = 'measured', analysis_version = ?, analyzed_at = current_timestamp,"
            " updated_at = current_timestamp WHERE run_id = ?",
            [ANALYSIS_VERSION, run_id],
        )
    statuses = {sec.name: st for sec, st, *_ in results}
    log.info("run %s measured: %s", run_id, statuses)
    return MeasureResult(run_id, written, statuses)
