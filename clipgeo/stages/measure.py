"""Measure stage: read a run's vectors from LanceDB, compute the metric tables, write them
to DuckDB (one transaction per run, replacing that run's earlier rows).

Measurements are grouped in *sections* (:data:`SECTIONS`), each filling a few tables. A
section that does not apply (a raw-vector metric on imported normalised vectors) is
``skipped`` with its reason; one that raises is ``failed`` with the error; the others
still land. ``measure_sections`` records the outcome of each, and a failed or skipped
section's tables hold no rows for the run (never stale ones), so reports can say what is
missing and why.

Bounded memory: the run is never read whole. Sections that look at every vector stream the
run's Lance table in batches (:class:`clipgeo.streaming.reader.LanceRun`: the double-ellipsoid suite,
spectra, the modality gap, exact retrieval); the others (separability, PCA, UMAP, clusters,
cosine distributions, origin shift, nearest reference) run on ``RunData.rv``, a stated,
deterministic hash sample of at most :data:`SAMPLE_IMAGES` images with all their captions
(:meth:`clipgeo.streaming.reader.LanceRun.sample`), recorded per section in ``measure_samples``.
The per-sample rows (``geo_per_sample``, two per pair) are written batch by batch to Parquet
parts in a scratch folder of the data home and loaded inside DuckDB in the run's transaction
(:class:`clipgeo.store.catalog.ParquetRows`): memory does not grow with the run.

Transforms: recall@k is derived from per-query ranks in SQL
(``sql/transforms/retrieval_recall.sql``); the headline figures are the view ``v_headline``
(``sql/views/50_v_headline.sql``), their one definition.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from clipgeo.core.config import ANALYSIS_VERSION, DataHome
from clipgeo.core.memory import release_memory, rss_mb
from clipgeo.geometry.gap import modality_gap
from clipgeo.geometry.separability import linear_separability, pca_project
from clipgeo.stages.sections import Rows, RunData, Section, Skip
from clipgeo.store import catalog, vectors
from clipgeo.streaming.reader import LanceRun, SampleInfo, sample_statement

log = logging.getLogger(__name__)

PCA_POINTS_PER_MODALITY = 2000
#: Images (with all their captions) in the in-memory hash sample the sampled sections use.
SAMPLE_IMAGES = 20_000
#: Runs with at most this many images get exact ranks against the whole gallery; larger runs
#: get ranks within disjoint hash-drawn sub-galleries of :data:`SUB_GALLERY_IMAGES` images.
FULL_GALLERY_MAX = 50_000
SUB_GALLERY_IMAGES = 5_000       # CLIP_benchmark's COCO 5k test convention
SUB_GALLERY_DRAWS = 10
#: Sections computed from every vector (streamed); the others run on the sample.
STREAMED_SECTIONS = frozenset({"retrieval", "modality_gap", "double_ellipsoid", "spectra"})


@dataclass(frozen=True)
class MeasureResult:
    run_id: str
    rows: dict[str, int]  # table -> rows written for this run
    sections: dict[str, str] = field(default_factory=dict)  # section -> ok | skipped | failed


def _separability_row(run_id: str, dataset_id: str, img: np.ndarray, txt: np.ndarray, kind: str,
                      comps: int | None, seed: int) -> dict:
    res = linear_separability(img, txt, pca_components=comps, seed=seed)
    return {
        "run_id": run_id,
        "vectors": kind,
        "features": "full" if comps is None else f"pca{comps}",
        "train_dataset_id": dataset_id,
        "eval_dataset_id": dataset_id,
        "accuracy": res["accuracy"],
        "precision": res["precision"],
        "recall": res["recall"],
        "n_train": int(res["n_train"]),
        "n_test": int(res["n_test"]),
    }


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
    """Exact ranks on the full gallery up to ``FULL_GALLERY_MAX`` images, else within disjoint
    hash-drawn sub-galleries (:func:`clipgeo.streaming.partials.run_retrieval`); ``retrieval_gallery``
    states which, with the spread over sub-galleries."""
    from clipgeo.streaming.partials import gallery_summary, run_retrieval

    opts = d.options
    ranks, info = run_retrieval(
        d.stream, d.rv, sample=d.sample, seed=d.seed,
        full_gallery_max=opts.get("full_gallery_max", FULL_GALLERY_MAX),
        sub_gallery_images=opts.get("sub_gallery_images", SUB_GALLERY_IMAGES),
        draws=opts.get("sub_gallery_draws", SUB_GALLERY_DRAWS),
        normalized_only=d.normalized_only, pool=d.cache.get("retrieval_pool"),
    )
    d.cache.pop("retrieval_pool", None)   # the sub-gallery pool is not needed after this section
    d.cache["retrieval_info"] = info
    d.cache["retrieval_rank_frame"] = ranks  # the one ranking every later section uses (per-cluster top-1)
    galleries = [gallery_summary(ranks, info)]
    n_q = int(opts.get("query_sample") or 0)
    if n_q > 0 and d.stream is not None:  # asked for: a stated query sample against the full gallery
        from clipgeo.streaming.partials import query_sample_ranks

        q_ranks, q_info = query_sample_ranks(d.stream, d.rv, n_q, device=opts.get("device") or "cpu",
                                             dtype=opts.get("query_dtype") or "float32")
        galleries.append(gallery_summary(q_ranks, q_info))
        info["statement"] += "; also " + q_info["statement"]
    return {"retrieval_ranks": ranks.with_columns(pl.lit(d.run_id).alias("run_id")).select(
                "run_id", "direction", "query_id", "rank", "ties"),
            "retrieval_gallery": pl.concat(galleries).with_columns(pl.lit(d.run_id).alias("run_id"))}


def _gap(d: RunData) -> dict[str, Rows]:
    if d.stream is None:
        g = modality_gap(d.rv.images, d.rv.texts, txt_image_index=d.idx)
    else:
        from clipgeo.streaming.partials import streamed_gap

        g = streamed_gap(d.stream, d.rv, d.moments())
        d.cache["gap_pairs_from"] = g.get("pairs_from")
    return {"modality_gap": [{
        "run_id": d.run_id,
        "gap": g["gap"],
        "gap_raw": None if d.normalized_only else g["gap_raw"],
        "paired_distance": g.get("paired_distance"),
        "mean_paired_cos": g.get("mean_paired_cos"),
        "mean_unpaired_cos": g.get("mean_unpaired_cos"),
        "n_pairs": int(g.get("n_pairs", len(d.idx))),
    }]}


#: Two separability fits run side by side only while both fit in this many bytes, at an
#: estimated 32 bytes per value of the pairs' rows (a fit holds its float64 training rows and
#: liblinear's 16-byte nodes, then the test rows: measured alone, 500 MB above the baseline at
#: 20,000 pairs x 768). At 1M pairs (a 20,000-image sample) they run one at a time: the stage's
#: peak is in its first fit, and two at once would add a second fit's memory to it.
SEPARABILITY_PARALLEL_BYTES = 1 << 30


def _separability(d: RunData) -> dict[str, Rows]:
    """The fits (normalised and raw vectors, full and PCA-2 features), side by side on two
    :class:`~clipgeo.streaming.threads.Lanes` when two fit in :data:`SEPARABILITY_PARALLEL_BYTES`
    (liblinear is single-threaded and releases the GIL); each fit is the one a single thread
    makes, the rows in the same order."""
    from clipgeo.streaming.threads import Lanes

    pi, pt = d.pairs
    kinds = ["normalized"] if d.normalized_only else ["normalized", "raw"]
    fits = [(kind, comps) for kind in kinds for comps in (None, 2)]

    def fit(f) -> dict:   # the pairs' rows gathered here, so no fit's copy outlives it
        img, txt = (d.img_n, d.txt_n) if f[0] == "normalized" else (d.rv.images, d.rv.texts)
        return _separability_row(d.run_id, d.dataset_id, img[pi], txt[pt], f[0], f[1], d.seed)

    if 2 * 32 * (len(pi) + len(pt)) * d.img_n.shape[1] <= SEPARABILITY_PARALLEL_BYTES:
        with Lanes(2) as lanes:
            return {"separability": lanes.map(fit, fits)}
    rows = []
    for f in fits:      # one at a time, what a fit freed given back before the next (glibc keeps it otherwise)
        rows.append(fit(f))
        release_memory()
    return {"separability": rows}


def _pca(d: RunData) -> dict[str, Rows]:
    return {"pca_points": _pca_rows(d.run_id, d.rv, d.img_n, d.txt_n, d.seed)}


#: The separability fits (the stage's largest in-memory copies of the sample: liblinear holds the
#: training rows at 16 bytes a value) run right after retrieval has dropped its sub-gallery pool and
#: before the moment pass; measured at 1M x 768 their peak was 2.03 GiB after the pass, 1.6 before it.
CORE_SECTIONS = [
    Section("retrieval", ("retrieval_ranks", "retrieval", "retrieval_gallery"), _retrieval),
    Section("separability", ("separability",), _separability),
    Section("pca", ("pca_points",), _pca),
    Section("modality_gap", ("modality_gap",), _gap),
]


def all_sections() -> list[Section]:
    """Every section, in the order they run: the core ones here, then the suites' (their
    modules list theirs; imported on first use, as they load UMAP, HDBSCAN and numba)."""
    from clipgeo.stages import measure_estimators, measure_geometry, measure_topology

    return [*CORE_SECTIONS, *measure_geometry.SECTIONS, *measure_topology.SECTIONS, *measure_estimators.SECTIONS]


#: Sections that run before the UMAP layout starts in its background thread: the streamed moment
#: pass and the ranks get both cores to themselves, and the separability fits (the largest
#: in-memory copies of the sample) do not add to the layout's memory; the layout overlaps the
#: per-sample pass and the sampled sections up to ``umap``.
_BEFORE_BACKGROUND = frozenset({"retrieval", "modality_gap", "separability", "pca"})
#: Sections that read nothing of the layout or the clusters: they run just before ``umap`` (whose
#: section waits for the background layout), so both cores stay busy while the layout finishes.
_BESIDE_LAYOUT = ("gap_estimators", "bootstrap")
#: Pairs the UMAP-based sections take from the head of the hash-ordered sample.
_SECTION_PAIRS = {"umap": "UMAP_PAIRS", "clusters": "UMAP_PAIRS", "umap_grid": "UMAP_GRID_PAIRS"}


def run_order(chosen: list[Section]) -> list[Section]:
    """The sections in the order they run: :func:`all_sections`'s, with :data:`_BESIDE_LAYOUT`
    moved to just before ``umap`` when it is chosen (what each writes does not depend on it)."""
    names = [s.name for s in chosen]
    if "umap" not in names:
        return list(chosen)
    moved = [s for s in chosen if s.name in _BESIDE_LAYOUT]
    rest = [s for s in chosen if s.name not in _BESIDE_LAYOUT]
    at = [s.name for s in rest].index("umap")
    return rest[:at] + moved + rest[at:]


def sample_row(run_id: str, section: str, d: RunData) -> dict:
    """The ``measure_samples`` row of a section: what its vectors were (all, streamed, or a sample)."""
    info = d.sample
    if section in STREAMED_SECTIONS or info is None:
        extra = ""
        if section == "retrieval":
            ri = d.cache.get("retrieval_info", {})
            extra = f"; {ri.get('statement', '')}" if ri else ""
        elif section == "modality_gap" and d.cache.get("gap_pairs_from") == "sample":
            extra = ("; the paired values (paired_distance, mean_paired_cos) over the captions of the "
                     "hash sample, as caption rows do not line up with image rows in this table")
        return {"run_id": run_id, "section": section, "method": "streamed",
                "n_images": info.population_images if info else None, "n_texts": info.population_texts if info else None,
                "population_images": info.population_images if info else None,
                "population_texts": info.population_texts if info else None, "seed": None,
                "statement": "every vector, streamed from Lance in batches" + extra}
    n_pairs = None
    if section in _SECTION_PAIRS:
        from clipgeo.stages import measure_topology as mt

        n_pairs = min(getattr(mt, _SECTION_PAIRS[section], mt.UMAP_PAIRS), info.n_images)
    return {"run_id": run_id, "section": section, "method": "all" if info.complete and n_pairs is None else "hash_sample",
            "n_images": n_pairs if n_pairs is not None else info.n_images,
            "n_texts": n_pairs if n_pairs is not None else info.n_texts,
            "population_images": info.population_images, "population_texts": info.population_texts,
            "seed": info.seed, "statement": sample_statement(info, n_pairs) + (
                "; the mean and std of image_image and text_text (and of the image-text kinds when caption rows "
                "line up with image rows) over every vector of the run, exact from the streamed sums"
                if section == "cosines" and d.stream is not None and not info.complete else "")}


def _run_section(sec: Section, data: RunData) -> tuple[str, str | None, dict[str, Rows], float]:
    t0 = time.perf_counter()
    c0 = time.process_time()
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
    data.cache.setdefault("cpu_seconds", {})[sec.name] = time.process_time() - c0
    seconds = time.perf_counter() - t0
    release_memory()   # what this section freed must not sit under the next one's peak
    if os.environ.get("CLIPGEO_TRACE_MEMORY"):
        print(f"section {sec.name}: rss {rss_mb():.0f} MB after it", file=sys.stderr, flush=True)
    return status, message, out, seconds


def _run_sections(chosen: list[Section], data: RunData, results: list) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipgeo-umap") as background:
        umap_pending = any(sec.name == "umap" for sec in chosen)
        for sec in chosen:
            if umap_pending and sec.name not in _BEFORE_BACKGROUND:
                from clipgeo.stages.measure_topology import start_umap

                start_umap(data, background)   # the layout runs beside the sections from here to its own
                umap_pending = False
            results.append((sec, *_run_section(sec, data)))


def _load_run(home: DataHome, run_id: str, seed: int = 0, sample_images: int = SAMPLE_IMAGES, pool_images=None
              ) -> tuple[str, bool, float | None, vectors.RunVectors, LanceRun, SampleInfo, vectors.RunVectors | None]:
    """The run's catalog facts, its Lance table and its hash sample of ``sample_images`` images.
    ``pool_images(n_images) -> int``: the size of a larger hash sample to draw instead (the
    retrieval sub-gallery pool), whose head is then the sample; returned last (None when not drawn)."""
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
    stream = LanceRun.open(home, run_id)
    n_pool = pool_images(stream.count("image")) if pool_images is not None else 0
    pool = None
    if n_pool > sample_images:
        # one hash sample serves both: the retrieval pool, and its head as the sections' sample
        pool, pinfo = stream.sample(n_pool, seed, normalized=bool(normalized_only))
        rv = pool.head(sample_images)
        info = SampleInfo(len(rv.image_ids), len(rv.sample_ids), pinfo.population_images, pinfo.population_texts, seed)
    else:
        rv, info = stream.sample(sample_images, seed, normalized=bool(normalized_only))
    if info.complete and (rv.text_image_index < 0).any():
        raise RuntimeError(f"run {run_id}: {int((rv.text_image_index < 0).sum())} captions have no image vector")
    return dataset_id, bool(normalized_only), logit_scale, rv, stream, info, pool


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
                reference_run_id: str | None = None, umap_grid: bool = False,
                sample_images: int = SAMPLE_IMAGES, full_gallery_max: int = FULL_GALLERY_MAX,
                sub_gallery_images: int = SUB_GALLERY_IMAGES, sub_gallery_draws: int = SUB_GALLERY_DRAWS,
                moments: dict | None = None, query_sample: int = 0, device: str | None = None,
                query_dtype: str = "float32", per_sample_parts: Sequence[str] | None = None) -> MeasureResult:
    """Compute every section (or those named) for one run and store them in one transaction.

    ``reference_run_id``: the same model on a training-like dataset, for the nearest-reference
    and cross-dataset separability sections (default: found by :func:`find_reference_run`).
    ``umap_grid``: also fit the UMAP hyperparameter grid. ``sample_images``: size of the hash
    sample the sampled sections use; ``full_gallery_max`` / ``sub_gallery_images`` /
    ``sub_gallery_draws``: the retrieval definition (see :func:`clipgeo.streaming.partials.run_retrieval`).
    ``moments``: the run's streamed moments when computed elsewhere (merged per-fragment
    partials from :func:`clipgeo.streaming.partials.moment_partial`, e.g. on Dask workers: ``flows/measure_dist.py``);
    the sections that need them then do not scan for them. ``query_sample``: also rank that
    many hash-sampled queries exactly against the full gallery (streamed; ``device="cuda"`` scores
    them with torch in ``query_dtype`` float16/float32). ``per_sample_parts``: the per-sample pass
    already written as Parquet parts in table order from these ``moments``
    (:func:`clipgeo.streaming.partials.per_sample_partial`, e.g. by Dask workers); otherwise it runs here,
    into a scratch folder under ``<home>/tmp`` that is removed afterwards.
    """
    from clipgeo.store.scratch import scratch

    with scratch(home, f"measure-{run_id}") as work_dir:
        return _measure_run(home, run_id, work_dir, seed=seed, sections=sections, reference_run_id=reference_run_id,
                            umap_grid=umap_grid, sample_images=sample_images, full_gallery_max=full_gallery_max,
                            sub_gallery_images=sub_gallery_images, sub_gallery_draws=sub_gallery_draws,
                            moments=moments, query_sample=query_sample, device=device, query_dtype=query_dtype,
                            per_sample_parts=per_sample_parts)


def _measure_run(home: DataHome, run_id: str, work_dir: Path, *, seed: int, sections: Sequence[str] | None,
                 reference_run_id: str | None, umap_grid: bool, sample_images: int, full_gallery_max: int,
                 sub_gallery_images: int, sub_gallery_draws: int, moments: dict | None, query_sample: int,
                 device: str | None, query_dtype: str, per_sample_parts: Sequence[str] | None) -> MeasureResult:
    def pool_images(n_img: int) -> int:   # the sub-gallery pool (run_retrieval's), drawn with the sample
        if n_img <= full_gallery_max:
            return 0
        return max(1, min(sub_gallery_draws, n_img // sub_gallery_images)) * sub_gallery_images

    wants_pool = sections is None or "retrieval" in sections
    dataset_id, normalized_only, logit_scale, rv, stream, info, pool = _load_run(
        home, run_id, seed, sample_images, pool_images if wants_pool else None)
    reference = None
    ref_id = reference_run_id or find_reference_run(home, run_id)
    if ref_id:
        r_dataset, r_norm, r_scale, r_rv, r_stream, r_info, _ = _load_run(home, ref_id, seed, sample_images)
        reference = RunData(ref_id, r_dataset, r_rv, r_norm, r_scale, seed, stream=r_stream, sample=r_info)
    data = RunData(run_id, dataset_id, rv, normalized_only, logit_scale, seed, reference,
                   {"umap_grid": umap_grid, "lance_dir": str(home.lance), "full_gallery_max": full_gallery_max,
                    "sub_gallery_images": sub_gallery_images, "sub_gallery_draws": sub_gallery_draws,
                    "moments": moments, "query_sample": query_sample, "device": device, "query_dtype": query_dtype,
                    "work_dir": str(work_dir), "per_sample_parts": per_sample_parts},
                   stream=stream, sample=info)
    if pool is not None:
        data.cache["retrieval_pool"] = pool
    chosen = all_sections()
    if sections is not None:
        known = {s.name for s in chosen}
        bad = sorted(set(sections) - known)
        if bad:
            raise ValueError(f"unknown sections {bad}; known: {sorted(known)}")
        chosen = [s for s in chosen if s.name in sections]
    chosen = run_order(chosen)

    results = []
    # What exists now (modules, the run's sample) lives through the stage: the collections that
    # release_memory runs after each section skip it (16 full collections cost about 3 s at 1M pairs).
    gc.freeze()
    try:
        _run_sections(chosen, data, results)
    finally:
        gc.unfreeze()

    where = {"run_id": run_id}
    written: dict[str, int] = {}
    with catalog.session(home) as con, catalog.transaction(con):
        for sec, status_, message, out, seconds in results:
            for table in sec.tables:
                written[table] = catalog.delete_insert(con, table, where, out.get(table, []))
            catalog.delete_insert(con, "measure_sections", {"run_id": run_id, "section": sec.name}, [{
                "run_id": run_id, "section": sec.name, "status": status_, "message": message, "seconds": seconds,
                "tables": ",".join(sec.tables), "analysis_version": ANALYSIS_VERSION,
                "cpu_seconds": data.cache.get("cpu_seconds", {}).get(sec.name),
            }])
            catalog.delete_insert(con, "measure_samples", {"run_id": run_id, "section": sec.name},
                                  [sample_row(run_id, sec.name, data)] if status_ == "ok" else [])
            if sec.name == "retrieval" and status_ == "ok":
                catalog.execute(con, "DELETE FROM retrieval WHERE run_id = ?", [run_id])
                catalog.run_sql_file(con, "transforms/retrieval_recall.sql", {"run_id": run_id})
                if data.cache.get("retrieval_info", {}).get("definition") == "sub_gallery":
                    catalog.run_sql_file(con, "transforms/retrieval_sub_gallery.sql", {"run_id": run_id})
                written["retrieval"] = catalog.execute(con, "SELECT count(*) FROM retrieval WHERE run_id = ?", [run_id])[0][0]

        record_run_protocol(con, run_id)   # the dataset's protocol, on the run (issue 25)
        catalog.execute(
            con,
            "UPDATE runs SET status = 'measured', analysis_version = ?, analyzed_at = current_timestamp,"
            " updated_at = current_timestamp WHERE run_id = ?",
            [ANALYSIS_VERSION, run_id],
        )
    statuses = {sec.name: st for sec, st, *_ in results}
    log.info("run %s measured: %s", run_id, statuses)
    return MeasureResult(run_id, written, statuses)


def record_run_protocol(con: Any, run_id: str) -> None:
    """Copy the protocol of the run's dataset onto the run (``runs.protocol``)."""
    catalog.execute(con, "UPDATE runs SET protocol = (SELECT d.protocol FROM datasets d"
                         " WHERE d.dataset_id = runs.dataset_id) WHERE run_id = ?", [run_id])
