"""Measurement sections of "Topological Perspectives on Optimal Multimodal Embedding Spaces"
(tables ``topo_*``, ``sql/schema/006_topology.sql``).

Sections: cosine distributions (Fig. 3), spectra (Figs. 10–12), UMAP layout with the
modality-mixing share and paired lines (Figs. 4–8), HDBSCAN clusters with local dimension
and per-cluster retrieval (Figs. 13–15), the nearest reference sample (Fig. 1) and the
train × eval separability matrix (Table I) — the last two against a *reference run*: the
same model on the training-like dataset (for ``shapes``: its train split), and the UMAP
hyperparameter grid (Figs. 16–17) when asked for.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from clipgeo.retrieval import retrieval_ranks
from clipgeo.stages.sections import RunData, Section, Skip
from clipgeo.topology.clusters import cluster_local_dimension, cluster_points, default_min_cluster_size
from clipgeo.topology.cosines import cosine_distributions
from clipgeo.topology.mixing import modality_mixing
from clipgeo.topology.separability_matrix import separability_matrix
from clipgeo.topology.spectra import spectra
from clipgeo.topology.umap_layout import first_pairs, paired_lines, umap_grid, umap_layout

UMAP_PAIRS = 5000
UMAP_GRID_PAIRS = 2000
MIXING_K = 15


def _tag(df: pl.DataFrame, run_id: str) -> pl.DataFrame:
    return df.with_columns(pl.lit(run_id).alias("run_id"))


def umap_pairs(d: RunData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first pairs as the UMAP uses them: (images, texts, image rows, text rows)."""
    key = "first_pairs"
    if key not in d.cache:
        d.cache[key] = first_pairs(d.img_n, d.txt_n, UMAP_PAIRS, d.idx)
    return d.cache[key]


def _item_ids(d: RunData, df: pl.DataFrame) -> pl.Series:
    """item_id (image_id / sample_id) for rows with modality and row_index."""
    mods = df["modality"].to_numpy()
    rows = df["row_index"].to_numpy()
    out = np.empty(len(rows), dtype=object)
    img = mods == "image"
    out[img] = d.rv.image_ids[rows[img]]
    out[~img] = d.rv.sample_ids[rows[~img]]
    return pl.Series("item_id", out.astype(str))


def _cosines(d: RunData) -> dict:
    exact = sums = None
    if d.stream is not None:
        # mean and std over every vector of the run, from the moment pass (histograms: the sample)
        from clipgeo.streaming.partials import cosine_moments_from_moments, cosine_sums_from_moments

        exact = cosine_moments_from_moments(d.moments())
        if d.sample is not None and d.sample.complete:   # the sample is the run: its sums are the pass's
            sums = cosine_sums_from_moments(d.moments())
    hist, summary = cosine_distributions(d.img_n, d.txt_n, d.idx, seed=d.seed, exact_moments=exact, sums=sums)
    return {"topo_cosine_hist": _tag(hist, d.run_id), "topo_cosine_summary": _tag(summary, d.run_id)}


def _spectra(d: RunData) -> dict:
    if d.stream is not None:  # every vector: the streamed moments of the normalised vectors
        from clipgeo.streaming.partials import spectra_from_moments

        curve, summary = spectra_from_moments(d.moments())
    else:
        curve, summary = spectra(d.rv.images, d.rv.texts)
    return {"topo_spectra": _tag(curve, d.run_id), "topo_spectra_summary": _tag(summary, d.run_id)}


def start_umap(d: RunData, executor) -> None:
    """Start the UMAP layout of the run's sample on ``executor`` (a background thread: the layout's
    SGD is single-threaded, for a layout reproducible from its seed, and releases the GIL), so
    it runs beside the streamed sections instead of after them; the ``umap`` section takes its
    result. Its inputs are computed here, in the calling thread."""
    img, txt, idx = d.img_n, d.txt_n, d.idx
    d.cache["umap_future"] = executor.submit(umap_layout, img, txt, UMAP_PAIRS, seed=d.seed, txt_image_index=idx)


def _umap(d: RunData) -> dict:
    im, tx, img_rows, txt_rows = umap_pairs(d)
    try:
        fut = d.cache.pop("umap_future", None)
        layout = (fut.result() if fut is not None
                  else umap_layout(d.img_n, d.txt_n, UMAP_PAIRS, seed=d.seed, txt_image_index=d.idx))
    except ValueError as exc:
        if "too few" in str(exc).lower() or "points" in str(exc).lower():
            raise Skip(f"UMAP not computed: {exc}") from exc
        raise
    d.cache["umap_layout"] = layout
    points, summary = modality_mixing(im, tx, layout, k=MIXING_K)
    lines_pca = paired_lines(d.img_n, d.txt_n, 500, txt_image_index=d.idx, seed=d.seed).with_columns(pl.lit("pca").alias("plane"))
    lines_umap = paired_lines(d.img_n, d.txt_n, 500, txt_image_index=d.idx, layout=layout, seed=d.seed).with_columns(
        pl.lit("umap").alias("plane"))
    layout_rows = layout.with_columns(_item_ids(d, layout))
    return {
        "topo_umap": _tag(layout_rows, d.run_id),
        "topo_mixing": _tag(points, d.run_id),
        "topo_mixing_summary": [{"run_id": d.run_id, **{k: float(v) for k, v in summary.items()}}],
        "topo_paired_lines": _tag(pl.concat([lines_pca, lines_umap], how="diagonal"), d.run_id),
    }


def run_ranks(d: RunData) -> tuple[np.ndarray, np.ndarray]:
    """The retrieval section's strict ranks (full gallery, or each query's sub-gallery) in the
    row order of ``d.rv``: ``(t2i per caption, i2t per image)``. Without that section's ranks
    (it failed or was not run) the ranks are computed on ``d.rv`` as the gallery."""
    frame = d.cache.get("retrieval_rank_frame")
    if frame is not None:
        def lookup(direction: str, ids) -> np.ndarray | None:
            f = frame.filter(pl.col("direction") == direction).select("query_id", "rank")
            got = pl.DataFrame({"query_id": list(ids)}).join(f, on="query_id", how="left", maintain_order="left")
            r = got["rank"]
            return None if r.null_count() else r.to_numpy().astype(np.int64)
        t2i, i2t = lookup("text_to_image", d.rv.sample_ids.tolist()), lookup("image_to_text", d.rv.image_ids.tolist())
        if t2i is not None and i2t is not None:
            return t2i, i2t
    rr = d.cache.get("retrieval_ranks")
    if rr is None:
        rr = retrieval_ranks(d.rv.images, d.rv.texts, d.idx)
        d.cache["retrieval_ranks"] = rr
    return rr.t2i, rr.i2t


def _clusters(d: RunData) -> dict:
    layout = d.cache.get("umap_layout")
    if layout is None:
        raise Skip("needs the UMAP layout of this run, which was not computed (see section 'umap')")
    n_points = layout.height
    mcs = default_min_cluster_size(n_points)
    if n_points < 2 * mcs:
        raise Skip(f"{n_points} laid-out points: HDBSCAN needs at least 2 x min_cluster_size = {2 * mcs} "
                   "to find more than one cluster, so no per-cluster figure would mean anything")
    clusters = cluster_points(layout, min_cluster_size=mcs)
    im, tx, img_rows, txt_rows = umap_pairs(d)
    # per-cluster top-1 from the run's one ranking (the retrieval section's: full gallery)
    t2i, i2t = run_ranks(d)
    per_cluster, cluster_spectra, corr = cluster_local_dimension(
        im, tx, clusters, t2i_ranks=t2i[txt_rows], i2t_ranks=i2t[img_rows], seed=d.seed)
    d.cache["cluster_assignment"] = (clusters, per_cluster)   # for the intrinsic-dimension section
    assign = clusters.with_columns(_item_ids(d, clusters)).select("modality", "item_id", "item_index", "cluster")
    return {
        "topo_cluster_members": _tag(assign, d.run_id),
        "topo_clusters": _tag(per_cluster, d.run_id),
        "topo_cluster_spectra": _tag(cluster_spectra, d.run_id),
        "topo_cluster_correlation": _tag(corr, d.run_id),
    }


def _reference(d: RunData):
    if d.reference is None:
        raise Skip("no reference run: embed the training-like dataset with the same model "
                   "(the shapes pipeline embeds its train split) or pass reference_run_id")
    return d.reference


def _nearest(d: RunData) -> dict:
    """Nearest reference sample per query with LanceDB's search over the reference run's
    normalised vectors (exact scan for small references, IVF-PQ index above 100k rows, with
    the index's recall@1 against the exact scan); numpy's exact search when no LanceDB folder
    is given."""
    from clipgeo.topology.nearest import lancedb_nearest_reference, nearest_reference, reference_table

    ref = _reference(d)
    lance_dir = d.options.get("lance_dir")
    frames, infos = [], []
    for modality, q, r, ids in (("image", d.img_n, ref.img_n, d.rv.image_ids), ("text", d.txt_n, ref.txt_n, d.rv.sample_ids)):
        if lance_dir:
            import lancedb

            db = lancedb.connect(lance_dir)
            name = f"reference_{ref.run_id}_{modality}"
            from clipgeo.store.vectors import has_table

            table = db.open_table(name) if has_table(db, name) else None
            if table is None or table.count_rows() != r.shape[0]:
                table = reference_table(db, name, r)
            rows, info = lancedb_nearest_reference(table, q, seed=d.seed)
            rows = rows.rename({"nearest_id": "nearest_reference_row"})
            infos.append({"run_id": d.run_id, "modality": modality, "reference_run_id": ref.run_id,
                          **{k: float(v) for k, v in info.items()}})
        else:
            rows = nearest_reference(q, r).rename({"nearest_index": "nearest_reference_row"}).with_columns(
                pl.lit("exact-numpy").alias("method"))
        # the reference row is a position in the reference run's vectors; store its id too
        ref_ids = ref.rv.image_ids if modality == "image" else ref.rv.sample_ids
        frames.append(rows.with_columns(
            pl.lit(modality).alias("modality"),
            pl.Series("item_id", ids[rows["query_index"].to_numpy()].astype(str)),
            pl.Series("nearest_item_id", ref_ids[rows["nearest_reference_row"].to_numpy()].astype(str))))
    out = pl.concat(frames, how="diagonal").with_columns(pl.lit(ref.run_id).alias("reference_run_id"),
                                                         pl.lit(ref.dataset_id).alias("reference_dataset_id"))
    return {"topo_nearest_reference": _tag(out, d.run_id), "topo_nearest_reference_info": infos}


def _sep_matrix(d: RunData) -> dict:
    ref = _reference(d)
    ipi, ipt = d.pairs
    rpi, rpt = ref.pairs
    sets = {d.dataset_id: (d.rv.images[ipi], d.rv.texts[ipt]), ref.dataset_id: (ref.rv.images[rpi], ref.rv.texts[rpt])}
    if d.normalized_only:
        sets = {k: (v[0], v[1]) for k, v in sets.items()}
    df = separability_matrix(sets, normalized=(True,) if d.normalized_only else (False, True), seed=d.seed)
    return {"topo_separability_matrix": _tag(df, d.run_id)}


def _umap_grid(d: RunData) -> dict:
    if not d.options.get("umap_grid"):
        raise Skip("not requested (measure with umap_grid=True; it fits 16 UMAP layouts)")
    layouts, cells = umap_grid(d.img_n, d.txt_n, n_pairs=min(UMAP_PAIRS, UMAP_GRID_PAIRS), seed=d.seed, txt_image_index=d.idx)
    keep = layouts.select("n_neighbors", "min_dist", "modality", "item_index", "x2d", "y2d")
    return {"topo_umap_grid": _tag(keep, d.run_id), "topo_umap_grid_cells": _tag(cells, d.run_id)}


SECTIONS = [
    Section("cosines", ("topo_cosine_hist", "topo_cosine_summary"), _cosines),
    Section("spectra", ("topo_spectra", "topo_spectra_summary"), _spectra),
    Section("umap", ("topo_umap", "topo_mixing", "topo_mixing_summary", "topo_paired_lines"), _umap),
    Section("clusters", ("topo_cluster_members", "topo_clusters", "topo_cluster_spectra", "topo_cluster_correlation"),
            _clusters),
    Section("nearest_reference", ("topo_nearest_reference", "topo_nearest_reference_info"), _nearest),
    Section("separability_matrix", ("topo_separability_matrix",), _sep_matrix),
    Section("umap_grid", ("topo_umap_grid", "topo_umap_grid_cells"), _umap_grid),
]
