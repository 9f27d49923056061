"""Write the HTML reports from the catalog: one per run, one comparing the runs given.

Reports read stored tables (through the views in ``sql/``) and never recompute metrics;
deleting the report folder and running this again gives the same files apart from the
generation timestamp. A section whose table has no rows for a run says so instead of
failing.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from clipgeo.config import ANALYSIS_VERSION, DataHome
from clipgeo.store import catalog
from dashboards import charts
from dashboards.page import Page, Section

RECALL_CURVE_KS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100)
SCATTER_MAX_POINTS = 3000  # per run and modality; above it a deterministic sample is drawn in SQL


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _load(con, run_ids: list[str]) -> dict[str, pl.DataFrame]:
    q = lambda sql: catalog.query(con, sql, {"ids": run_ids})  # noqa: E731
    where = "WHERE list_contains($ids, run_id)"
    labels = f"(SELECT run_id, label FROM runs {where})"
    ks = ", ".join(f"({k})" for k in RECALL_CURVE_KS)
    return {
        "runs": q(f"SELECT * FROM v_runs {where} ORDER BY label"),
        "compare": q(f"SELECT * FROM v_compare {where} ORDER BY label"),
        "retrieval": q(f"SELECT r.*, l.label FROM retrieval r JOIN {labels} l USING (run_id) ORDER BY run_id, direction, k"),
        "curve": q(
            f"SELECT r.run_id, l.label, r.direction, ks.k, avg((r.rank < ks.k)::DOUBLE) AS recall"
            f" FROM retrieval_ranks r JOIN {labels} l USING (run_id) CROSS JOIN (VALUES {ks}) ks(k)"
            f" GROUP BY ALL ORDER BY r.run_id, r.direction, ks.k"
        ),
        "gap": q(f"SELECT g.*, l.label FROM modality_gap g JOIN {labels} l USING (run_id) ORDER BY l.label"),
        "sep": q(f"SELECT s.*, l.label FROM separability s JOIN {labels} l USING (run_id) ORDER BY l.label, vectors, features"),
        "pca": q(f"SELECT p.*, l.label FROM pca_points p JOIN {labels} l USING (run_id) ORDER BY run_id, modality, item_id"),
        "sections": q(f"SELECT * FROM measure_sections {where} ORDER BY run_id, section"),
        "geo_modality": q(f"SELECT g.*, l.label FROM geo_modality g JOIN {labels} l USING (run_id) ORDER BY l.label, modality"),
        "geo_cross": q(f"SELECT g.*, l.label FROM geo_cross g JOIN {labels} l USING (run_id) ORDER BY l.label"),
        "geo_subspaces": q(f"SELECT g.*, l.label FROM geo_subspaces g JOIN {labels} l USING (run_id) ORDER BY l.label, k"),
        "geo_eigen": q(f"SELECT g.*, l.label FROM geo_eigenvalues g JOIN {labels} l USING (run_id) ORDER BY l.label, modality, axis"),
        "geo_tilt": q(
            f"SELECT g.*, l.label, 1 / sqrt(m.d) AS fully_tilted FROM geo_tilt g JOIN {labels} l USING (run_id)"
            f" JOIN geo_modality m USING (run_id, modality) ORDER BY l.label, modality, axis"
        ),
        "geo_hist": q(f"SELECT g.*, l.label FROM geo_histograms g JOIN {labels} l USING (run_id) ORDER BY l.label, kind, modality, bin"),
        "geo_points": q(
            f"WITH ranked AS (SELECT p.*, row_number() OVER (PARTITION BY run_id, modality ORDER BY hash(item_id)) AS k,"
            f" count(*) OVER (PARTITION BY run_id, modality) AS n_total FROM geo_per_sample p {where})"
            f" SELECT r.run_id, l.label, r.modality, r.item_id, r.conformity, r.cos_to_mean, r.n_total,"
            f" s.caption, s.image_ref FROM ranked r JOIN {labels} l USING (run_id)"
            f" JOIN runs ru USING (run_id)"
            f" LEFT JOIN samples s ON s.dataset_id = ru.dataset_id AND ((r.modality = 'text' AND s.sample_id = r.item_id))"
            f" WHERE r.k <= {SCATTER_MAX_POINTS} ORDER BY r.run_id, r.modality, r.item_id"
        ),
        "geo_shift": q(f"SELECT g.*, l.label FROM geo_origin_shift g JOIN {labels} l USING (run_id) ORDER BY l.label, alpha"),
        "extremes": q(f"SELECT * FROM v_conformity_extremes {where} ORDER BY run_id, modality, kind DESC, rank"),
        "headline": q(f"SELECT * FROM v_headline {where} ORDER BY label"),
        "nearest": q(
            f"WITH h AS (SELECT n.run_id, n.modality, floor(n.max_cos * 50) / 50 AS max_cos, count(*) AS n,"
            f" any_value(n.reference_dataset_id) AS reference_dataset_id FROM topo_nearest_reference n {where}"
            f" GROUP BY n.run_id, n.modality, floor(n.max_cos * 50) / 50)"
            f" SELECT h.*, l.label, h.n / sum(h.n) OVER (PARTITION BY h.run_id, h.modality) * 50 AS density"
            f" FROM h JOIN {labels} l USING (run_id) ORDER BY h.run_id, h.modality, h.max_cos"
        ),
        "sepmat": q(f"SELECT m.*, l.label FROM topo_separability_matrix m JOIN {labels} l USING (run_id) ORDER BY l.label, train_set, eval_set, normalized DESC, pca"),
        "cos_hist": q(f"SELECT h.*, (h.bin_lo + h.bin_hi) / 2 AS cos, l.label FROM topo_cosine_hist h JOIN {labels} l USING (run_id) ORDER BY l.label, kind, bin_lo"),
        "cos_summary": q(f"SELECT s.*, l.label FROM topo_cosine_summary s JOIN {labels} l USING (run_id) ORDER BY l.label, kind"),
        "umap": q(
            f"WITH u AS (SELECT u.*, row_number() OVER (PARTITION BY run_id, modality ORDER BY hash(item_id)) AS k,"
            f" count(*) OVER (PARTITION BY run_id, modality) AS n_total FROM topo_umap u {where})"
            f" SELECT u.run_id, l.label, u.modality, u.item_id, u.x2d, u.y2d, u.n_total, c.cluster::VARCHAR AS cluster,"
            f" p.conformity, p.cos_to_mean, s.caption, s.image_ref"
            f" FROM u JOIN {labels} l USING (run_id) JOIN runs ru USING (run_id)"
            f" LEFT JOIN topo_cluster_members c ON c.run_id = u.run_id AND c.modality = u.modality AND c.item_index = u.item_index"
            f" LEFT JOIN geo_per_sample p ON p.run_id = u.run_id AND p.modality = u.modality AND p.item_id = u.item_id"
            f" LEFT JOIN samples s ON u.modality = 'text' AND s.dataset_id = ru.dataset_id AND s.sample_id = u.item_id"
            f" WHERE u.k <= {SCATTER_MAX_POINTS} ORDER BY u.run_id, u.modality, u.item_id"
        ),
        "mixing": q(f"SELECT m.*, l.label FROM topo_mixing_summary m JOIN {labels} l USING (run_id) ORDER BY l.label"),
        "lines": q(f"SELECT p.*, l.label FROM topo_paired_lines p JOIN {labels} l USING (run_id) ORDER BY l.label, plane, pair_id"),
        "spectra": q(f"SELECT s.*, l.label FROM topo_spectra s JOIN {labels} l USING (run_id) ORDER BY l.label, scope, index"),
        "spectra_summary": q(f"SELECT s.*, l.label FROM topo_spectra_summary s JOIN {labels} l USING (run_id) ORDER BY l.label, scope"),
        "clusters": q(f"SELECT c.*, c.cluster::VARCHAR AS cluster_name, l.label FROM topo_clusters c JOIN {labels} l USING (run_id) ORDER BY l.label, cluster"),
        "cluster_spectra": q(
            f"SELECT c.*, c.cluster::VARCHAR AS cluster_name, l.label FROM topo_cluster_spectra c JOIN {labels} l USING (run_id)"
            f" WHERE c.scope = 'joint' ORDER BY l.label, c.cluster, c.index"
        ),
        "cluster_corr": q(f"SELECT c.*, l.label FROM topo_cluster_correlation c JOIN {labels} l USING (run_id) ORDER BY l.label"),
        "umap_grid": q(
            f"WITH g AS (SELECT g.*, row_number() OVER (PARTITION BY run_id, n_neighbors, min_dist, modality ORDER BY item_index) AS k"
            f" FROM topo_umap_grid g {where}) SELECT g.*, l.label FROM g JOIN {labels} l USING (run_id) WHERE g.k <= 500"
        ),
    }


def _provenance(run: dict) -> list[tuple[str, str]]:
    return [
        ("run", f"{run['run_id']} ({run['status']})"),
        ("model", f"{run['model_name']} — {run['model_id']}"),
        ("checkpoint", f"{run['pretrained'] or '-'} (sha256 {run['checkpoint_sha256'] or 'n/a'})"),
        ("training objective", f"{run['objective'] or 'unknown'}{' + Hopfield' if run['hopfield'] else ''}"),
        ("dataset", f"{run['dataset_id']} ({run['dataset_source']}, {run['n_images']} images, {run['n_texts']} captions)"),
        ("vectors", "L2-normalised only (imported)" if run["vectors_normalized"] else "raw (pre-normalisation) and normalised"),
        ("analysis", f"version {run['analysis_version']}, measured {run['analyzed_at']}"),
    ]


def _missing(df: pl.DataFrame, what: str, sections: pl.DataFrame | None = None, section: str | None = None) -> str | None:
    """Why a section has no rows: the recorded failure or skip reason when there is one."""
    if df.height:
        return None
    if sections is not None and section is not None:
        hit = sections.filter(pl.col("section") == section)
        if hit.height and hit["status"][0] != "ok":
            return f"section '{section}' {hit['status'][0]}: {hit['message'][0]}"
        if not hit.height:
            return f"section '{section}' has not been measured for this run (run `clipgeo analyse`)"
    return f"no {what} rows stored for this run"


def _headline(row: dict) -> str:
    return (
        f"text→image R@1 {row['t2i_r1']:.1%}, image→text R@1 {row['i2t_r1']:.1%}, gap {row['gap']:.3f}, "
        f"separability {row['separability_accuracy']:.1%}"
        if row.get("t2i_r1") is not None and row.get("gap") is not None and row.get("separability_accuracy") is not None
        else "headline figures incomplete"
    )


def _fit_lines(mod: pl.DataFrame, points: pl.DataFrame) -> pl.DataFrame:
    """Two endpoints per (run, modality) of the stored fit C ≈ a·cos + b over the plotted cos range."""
    rows = []
    for r in mod.to_dicts():
        pts = points.filter((pl.col("run_id") == r["run_id"]) & (pl.col("modality") == r["modality"]))
        if not pts.height or r.get("conformity_fit_a") is None:
            continue
        for x in (pts["cos_to_mean"].min(), pts["cos_to_mean"].max()):
            rows.append({"run_id": r["run_id"], "label": r["label"], "modality": r["modality"], "x": x,
                         "y": r["conformity_fit_a"] * x + r["conformity_fit_b"], "a": r["conformity_fit_a"],
                         "b": r["conformity_fit_b"], "r": r["conformity_fit_pearson_r"]})
    return pl.DataFrame(rows)


def _sampled_note(points: pl.DataFrame) -> str:
    if not points.height:
        return ""
    totals = points.group_by("run_id", "modality").agg(pl.col("n_total").first(), pl.len().alias("shown"))
    cut = totals.filter(pl.col("n_total") > pl.col("shown"))
    if not cut.height:
        return " All points shown."
    return " Sampled for responsiveness: " + "; ".join(
        f"{r['modality']} {r['shown']} of {r['n_total']}" for r in cut.to_dicts()) + " points shown (deterministic sample)."


def _fmt_pairs(row: dict, keys: list[tuple[str, str]]) -> str:
    return ", ".join(f"{name} {row[k]:.3f}" for k, name in keys if row.get(k) is not None)


def geometry_sections(f: dict[str, pl.DataFrame], who: str, column: str | None = None) -> list[Section]:
    """The Double-Ellipsoid figures and tables (shared by the run and comparison reports)."""
    secs = f["sections"]
    mod, cross = f["geo_modality"], f["geo_cross"]
    kind = ", ".join(sorted(set(mod["vectors"].to_list()))) if mod.height else "raw"
    heads = {r["modality"] + "@" + r["label"]: r for r in mod.to_dicts()}
    out = []
    hist_r = f["geo_hist"].filter(pl.col("kind") == "radius")
    out.append(Section(
        "P2 — thin shell: distribution of ‖x − μ‖",
        f"Histogram of each sample's distance to its modality mean ({kind} vectors) for {who}. A thin shell has a small "
        "std/mean and no mass near the mean. "
        + "; ".join(f"{k.split('@')[0]} ({r['label']}): std/mean {r['shell_std_over_mean']:.3f}, share within half the "
                    f"median radius {r['shell_frac_near_mean']:.3f}" for k, r in heads.items()),
        chart=charts.histogram_bars(hist_r, x_title="‖x − μ_modality‖", column=column) if hist_r.height else None,
        missing=_missing(hist_r, "shell", secs, "double_ellipsoid"),
    ))
    eig = f["geo_eigen"]
    out.append(Section(
        "P3 — ellipsoid: covariance spectrum (semi-axes √λ)",
        f"Every semi-axis √λ_k of each modality's covariance for {who}, log scale. "
        + "; ".join(f"{k.split('@')[0]} ({r['label']}): anisotropy (largest/median semi-axis) {r['ellipsoid_anisotropy']:.2f}, "
                    f"effective rank {r['ellipsoid_effective_rank']:.1f}, radius CV Euclidean {r['euclidean_radius_cv']:.3f} "
                    f"vs Mahalanobis {r['mahalanobis_radius_cv']:.3f}" for k, r in heads.items()),
        chart=charts.spectrum_lines(eig, column=column) if eig.height else None,
        missing=_missing(eig, "eigenvalue", secs, "double_ellipsoid"),
    ))
    tilt = f["geo_tilt"]
    out.append(Section(
        "P4 — tilt: alignment of principal axes with the coordinate axes",
        f"Largest absolute coordinate of each top principal axis for {who} (1 = axis-aligned; dashed: 1/√d, fully tilted). "
        + "; ".join(f"{r['label']}: angle between the modalities' first axes {r['first_axis_angle_deg']:.1f}°"
                    for r in cross.to_dicts()),
        chart=charts.tilt_points(tilt, column=column) if tilt.height else None,
        missing=_missing(tilt, "tilt", secs, "double_ellipsoid"),
    ))
    oc_cols = ["label", "modality", "vectors", "offcentre_mean_norm", "offcentre_mean_norm_over_mean_length",
               "offcentre_mean_norm_over_max_semi_axis"]
    out.append(Section(
        "P5 — off-centre: how far each ellipsoid's centre is from the origin",
        f"‖μ‖, ‖μ‖ / mean‖x‖ and ‖μ‖ / largest semi-axis per modality for {who}; cos(μ_I, μ_T): "
        + "; ".join(f"{r['label']} {r['cos_between_means']:.3f}" for r in cross.to_dicts()),
        table=mod.select(oc_cols).to_dicts() if mod.height else None,
        missing=_missing(mod, "off-centre", secs, "double_ellipsoid"),
    ))
    sub = f["geo_subspaces"]
    out.append(Section(
        "P1 — separate subspaces: principal angles",
        f"Principal angles between the image and text top-k principal subspaces (k covering 90% and 99% of variance, and "
        f"fixed k) and the share of one modality's variance captured by the other's subspace, for {who}.",
        table=sub.drop("run_id").to_dicts() if sub.height else None,
        missing=_missing(sub, "subspace", secs, "double_ellipsoid"),
    ))
    pts = f["geo_points"]
    fits = _fit_lines(mod, pts)
    out.append(Section(
        "Conformity against cosine to the mean",
        f"Per sample, conformity C(v) = mean cos(v, other samples of its modality) against cos(v, μ), with the fit "
        f"C ≈ a·cos + b (dashed) for {who}. "
        + "; ".join(f"{k.split('@')[0]} ({r['label']}): a {r['conformity_fit_a']:.3f}, b {r['conformity_fit_b']:.3f}, "
                    f"Pearson r {r['conformity_fit_pearson_r']:.3f}, Spearman ρ {r['conformity_fit_spearman_rho']:.3f}"
                    for k, r in heads.items() if r.get("conformity_fit_a") is not None)
        + "." + _sampled_note(pts),
        chart=charts.conformity_scatter(pts, fits, column=column) if pts.height and fits.height else None,
        missing=_missing(pts, "per-sample", secs, "double_ellipsoid"),
    ))
    hist_c = f["geo_hist"].filter(pl.col("kind") == "conformity")
    out.append(Section(
        "Conformity distributions",
        f"Distribution of conformity per modality for {who}. Divergence between them: "
        + "; ".join(f"{r['label']}: Jensen–Shannon {r['conformity_js_divergence']:.3f} bits, KS {r['conformity_ks_statistic']:.3f}"
                    for r in cross.to_dicts()),
        chart=charts.histogram_bars(hist_c, x_title="conformity C(v)", column=column) if hist_c.height else None,
        missing=_missing(hist_c, "conformity", secs, "double_ellipsoid"),
    ))
    shift = f["geo_shift"]
    best = []
    for label in shift["label"].unique(maintain_order=True).to_list() if shift.height else []:
        sh = shift.filter(pl.col("label") == label)
        b = sh.sort("infonce").row(0, named=True)
        best.append(f"{label}: lowest InfoNCE at α = {b['alpha']:.2f} ({b['infonce']:.3f} vs {sh.filter(pl.col('alpha') == 0)['infonce'][0]:.3f} at α = 0)"
                    if sh.filter(pl.col("alpha") == 0).height else f"{label}: lowest InfoNCE at α = {b['alpha']:.2f}")
    out.append(Section(
        "Origin shift: is the off-origin placement beneficial?",
        f"Each modality shifted by −α·μ and re-normalised, for {who}: alignment and uniformity (Wang & Isola), symmetric "
        "InfoNCE at the model's temperature, top-1 retrieval both ways (on a stated image subsample). " + "; ".join(best),
        chart=charts.shift_curves(shift, color="label" if column else None) if shift.height else None,
        missing=_missing(shift, "origin-shift", secs, "origin_shift"),
    ))
    ext = f["extremes"]
    out.append(Section(
        "Most and least conforming samples",
        f"The 10 most and least conforming samples per modality for {who} (view v_conformity_extremes), with captions.",
        table=ext.select("modality", "kind", "rank", "item_id", "conformity", "caption").to_dicts() if ext.height else None,
        missing=_missing(ext, "conformity", secs, "double_ellipsoid"),
    ))
    return out


def _per_run(df: pl.DataFrame, fmt) -> str:
    """One clause per run (``fmt(row)`` for the first row of each label)."""
    if not df.height:
        return ""
    return "; ".join(fmt(g.row(0, named=True)) for _, g in df.group_by("label", maintain_order=True))


def core_sections(f: dict[str, pl.DataFrame], who: str, column: str | None = None) -> list[Section]:
    """Retrieval, recall curves, gap, separability and PCA (shared by the run and comparison reports)."""
    secs = f["sections"]
    ret, curve, gap, sep, pca = f["retrieval"], f["curve"], f["gap"], f["sep"], f["pca"]
    r1 = ret.filter((pl.col("direction") == "text_to_image") & (pl.col("k") == 1))
    full = sep.filter((pl.col("vectors") == "normalized") & (pl.col("features") == "full"))
    return [
        Section(
            "Cross-modal retrieval (Table II)",
            f"Exact retrieval on normalised vectors of {who}. Text→image: a caption's own image in the top k; "
            "image→text: any caption of the image in the top k (CLIP_benchmark). Black ticks: chance. Text→image R@1: "
            + _per_run(r1, lambda r: f"{r['label']} {r['recall']:.1%} (chance {r['chance']:.2%})"),
            chart=charts.retrieval_bars(ret, column=column) if ret.height else None,
            missing=_missing(ret, "retrieval", secs, "retrieval"),
        ),
        Section(
            "Recall@k curves",
            f"recall@k for k = 1…{RECALL_CURVE_KS[-1]} from the stored per-query ranks of {who}"
            + ("; colour = run, dash = direction." if column else "."),
            chart=charts.recall_curve(curve, color="label" if column else "direction") if curve.height else None,
            missing=_missing(curve, "retrieval rank", secs, "retrieval"),
        ),
        Section(
            "Modality gap (Liang et al.)",
            f"gap = ‖mean(x̂_I) − mean(x̂_T)‖ on normalised vectors of {who}; gap_raw the same on raw vectors; "
            "paired distance = mean ‖x̂_I − x̂_T‖ over image–caption pairs. Measured gap: "
            + _per_run(gap, lambda r: f"{r['label']} {r['gap']:.3f}"),
            table=gap.drop("run_id").to_dicts() if gap.height else None,
            missing=_missing(gap, "modality-gap", secs, "modality_gap"),
        ),
        Section(
            "Modality separability (Table I)",
            f"Soft-margin linear SVM (C = 1) separating image from text vectors of {who}, image = positive class, "
            "held-out 30% of image–caption pairs; full vectors and their top-2 principal components. Held-out accuracy "
            "on normalised vectors: " + _per_run(full, lambda r: f"{r['label']} {r['accuracy']:.1%}"),
            chart=charts.separability_bars(sep, column=column) if sep.height else None,
            table=sep.select("label", "vectors", "features", "accuracy", "precision", "recall", "n_train", "n_test").to_dicts()
            if sep.height else None,
            missing=_missing(sep, "separability", secs, "separability"),
        ),
        Section(
            "Top-2 principal components (Fig. 2)",
            f"Normalised image and caption vectors of {who} projected on the two leading principal components of both "
            "modalities together (at most 2,000 points per modality stored). Click the legend to isolate a modality.",
            chart=charts.pca_scatter(pca, column=column) if pca.height else None,
            missing=_missing(pca, "PCA", secs, "pca"),
        ),
    ]


def _umap_note(u: pl.DataFrame) -> str:
    if not u.height:
        return ""
    t = u.group_by("run_id", "modality").agg(pl.col("n_total").first(), pl.len().alias("shown"))
    cut = t.filter(pl.col("n_total") > pl.col("shown"))
    return (" All laid-out points shown." if not cut.height else " Sampled for responsiveness: " + "; ".join(
        f"{r['modality']} {r['shown']} of {r['n_total']}" for r in cut.to_dicts()) + " points shown.")


def topology_sections(f: dict[str, pl.DataFrame], who: str, column: str | None = None) -> list[Section]:
    """The figures and tables of the topological paper (shared by the run and comparison reports)."""
    secs = f["sections"]
    out = []
    sm = f["sepmat"]
    out.append(Section(
        "Table I — separability across datasets (train × eval)",
        f"Linear SVM on modality labels for {who}, trained on one dataset's pairs and evaluated on the held-out pairs of "
        "the same and of the other dataset embedded by the same model (the reference run); raw and normalised vectors, "
        "full and top-2 PCs.",
        table=sm.select("label", "train_set", "eval_set", "normalized", "pca", "n_features", "accuracy", "precision",
                        "recall", "n_test").to_dicts() if sm.height else None,
        missing=_missing(sm, "separability-matrix", secs, "separability_matrix"),
    ))
    nr = f["nearest"]
    out.append(Section(
        "Fig. 1 — cosine to the nearest reference sample",
        f"Per sample of {who}, the highest cosine to any sample of the same modality in the reference (training-like) "
        "dataset embedded by the same model; histogram (bins of 0.02)."
        + (f" Reference: {nr['reference_dataset_id'][0]}." if nr.height else ""),
        chart=density_or_none(nr, "max_cos", "max cos to the reference set", "modality", column),
        missing=_missing(nr, "nearest-reference", secs, "nearest_reference"),
    ))
    ch = f["cos_hist"]
    cs = f["cos_summary"]
    out.append(Section(
        "Fig. 3 — cosine similarity distributions",
        f"Paired image–text, unpaired image–text, image–image and text–text cosines of {who} (normalised vectors; large "
        "populations on a fixed-seed sample of pairs, see n_pairs). Means: "
        + _per_run(cs, lambda r: r["label"]) + " — "
        + "; ".join(f"{r['kind']} {r['mean']:.3f}" for r in cs.to_dicts()[:8] if r.get("mean") is not None),
        chart=density_or_none(ch, "cos", "cosine", "kind", column),
        table=cs.drop("run_id").to_dicts() if cs.height and not column else None,
        missing=_missing(ch, "cosine", secs, "cosines"),
    ))
    u = f["umap"]
    mx = f["mixing"]
    mix_caption = _per_run(mx, lambda r: f"{r['label']}: mean share of other-modality neighbours (k = {int(r['k'])}) "
                                         f"{r['mean_share_original']:.3f} in the original space, {r['mean_share_layout']:.3f} "
                                         f"in the layout (mixing ratio {r['mixing_ratio_original']:.2f} / "
                                         f"{r['mixing_ratio_layout']:.2f} of what fully mixed modalities give)")
    if column:
        out.append(Section(
            "Figs. 4, 5, 7 — UMAP of the joint embedding",
            f"UMAP (cosine input, haversine output, fixed seed) of the first pairs' normalised vectors for {who}. "
            + mix_caption + "." + _umap_note(u),
            chart=charts.umap_scatter(u, column=column) if u.height else None,
            missing=_missing(u, "UMAP", secs, "umap"),
        ))
    else:
        out.append(Section(
            "Figs. 4, 5, 7 — UMAP of the joint embedding, linked to conformity",
            f"UMAP (cosine input, haversine output, fixed seed) of the first pairs' normalised vectors of {who}, shown "
            "equirectangular after rotating the mean direction to the centre; brush it to highlight the same samples in "
            "the conformity plot. " + mix_caption + "." + _umap_note(u),
            chart=charts.umap_linked(u) if u.height else None,
            missing=_missing(u, "UMAP", secs, "umap"),
        ))
    out.append(Section(
        "Modality mixing share",
        "For each point, the share of its k nearest neighbours that are of the other modality, in the original space and "
        "in the 2-D layout; mixing ratio = mean share / the share fully mixed modalities would give.",
        table=mx.select("label", "k", "mean_share_original_image", "mean_share_original_text", "mixing_ratio_original",
                        "mean_share_layout_image", "mean_share_layout_text", "mixing_ratio_layout").to_dicts()
        if mx.height else None,
        missing=_missing(mx, "mixing", secs, "umap"),
    ))
    for plane, title in (("pca", "top-2 principal components"), ("umap", "UMAP plane")):
        ln = f["lines"].filter(pl.col("plane") == plane) if f["lines"].height else f["lines"]
        out.append(Section(
            f"Figs. 6, 8 — paired lines ({title})",
            f"500 image–caption pairs of {who} in the {title}, each joined by a line (blue: image, orange: caption). "
            "Long parallel lines mean separated but coordinated modalities.",
            chart=charts.paired_line_chart(ln, column=column) if ln.height else None,
            missing=_missing(ln, "paired-line", secs, "umap"),
        ))
    sp, ss = f["spectra"], f["spectra_summary"]
    out.append(Section(
        "Figs. 10–12 — singular-value spectra",
        f"Singular values σ_k/σ_1 of the centred normalised vectors of {who}, per modality and joint. Collapse point = "
        "first k with σ_k/σ_1 below the threshold; effective rank = exp(entropy of σ/Σσ). "
        + "; ".join(f"{r['label']} {r['scope']}: collapse at {r['collapse_index']}, effective rank {r['effective_rank']:.1f}"
                    for r in ss.to_dicts()),
        chart=charts.sigma_curves(sp, column=column) if sp.height else None,
        table=ss.drop("run_id").to_dicts() if ss.height and not column else None,
        missing=_missing(sp, "spectrum", secs, "spectra"),
    ))
    cl, csp, cc = f["clusters"], f["cluster_spectra"], f["cluster_corr"]
    corr_txt = _per_run(cc, lambda r: f"{r['label']}: {r['n_clusters']} clusters ({r['n_clusters_used']} used), "
                                      + (f"Pearson r {r['pearson_r']:.3f}, Spearman ρ {r['spearman_rho']:.3f}"
                                         if r.get("pearson_r") is not None else f"no correlation ({r['message']})"))
    if not column and u.height:
        out.append(Section(
            "Fig. 13 — HDBSCAN clusters on the UMAP layout",
            f"Clusters found by HDBSCAN on the sphere coordinates of the layout of {who} (-1 = noise). " + corr_txt,
            chart=charts.umap_scatter(u.with_columns(pl.col("cluster").fill_null("-1")), color="cluster"),
        ))
    out.append(Section(
        "Fig. 14 — per-cluster spectra",
        f"Joint singular values σ_k/σ_1 of each cluster of {who}, against k / number of values, on subsamples of equal "
        "size so clusters of different sizes are comparable.",
        chart=charts.sigma_curves(csp, x="index_frac", color="cluster_name", column=column) if csp.height else None,
        missing=_missing(csp, "cluster-spectrum", secs, "clusters"),
    ))
    out.append(Section(
        "Fig. 15 — local dimension against per-cluster retrieval",
        f"Per cluster of {who}: area under the log singular-value curve (local dimension) against top-1 retrieval of "
        "its members. " + corr_txt,
        chart=charts.localdim_vs_accuracy(cl.filter(pl.col("status") == "ok") if cl.height else cl, column=column)
        if cl.height else None,
        table=cl.select("label", "cluster", "n_points", "auc_joint", "erank_joint", "top1", "status", "message").to_dicts()
        if cl.height and not column else None,
        missing=_missing(cl, "cluster", secs, "clusters"),
    ))
    g = f["umap_grid"]
    if not column:
        out.append(Section(
            "Figs. 16–17 — UMAP hyperparameter grid",
            f"Layouts of {who} for n_neighbors (rows) × min_dist (columns), at most 500 points per modality and cell.",
            chart=charts.umap_grid_chart(g) if g.height else None,
            missing=_missing(g, "UMAP-grid", secs, "umap_grid"),
        ))
    return out


def density_or_none(df: pl.DataFrame, x: str, x_title: str, color: str, column: str | None):
    return charts.density_lines(df, x=x, x_title=x_title, color=color, column=column) if df.height else None


def run_page(data: dict[str, pl.DataFrame], run_id: str) -> Page:
    f = {k: v.filter(pl.col("run_id") == run_id) for k, v in data.items()}
    run = f["runs"].to_dicts()[0]
    label = run["label"]
    page = Page(title=f"clipgeo report — {label}", provenance=_provenance(run) + [("generated", _now())])
    for sec in core_sections(f, label) + geometry_sections(f, label) + topology_sections(f, label):
        page.add(sec)
    sections = f["sections"]
    page.add(Section(
        "Measurement status",
        "What each measurement section did for this run: ok, skipped (not applicable, with the reason) or failed "
        "(with the error). Sections that are not ok have no rows above.",
        table=sections.select("section", "status", "message", "seconds", "analysis_version").to_dicts() if sections.height else None,
        missing=None if sections.height else "no measurement has been recorded for this run",
    ))
    return page


def compare_page(data: dict[str, pl.DataFrame], run_ids: list[str]) -> Page:
    runs = data["runs"]
    datasets = sorted(set(runs["dataset_id"].to_list()))
    page = Page(
        title=f"clipgeo comparison — {len(run_ids)} runs",
        provenance=[("runs", "; ".join(f"{r['run_id']}: {r['label']} (ckpt sha256 {(r['checkpoint_sha256'] or 'n/a')[:12]})" for r in runs.to_dicts())),
                    ("datasets", ", ".join(datasets)), ("analysis version", ANALYSIS_VERSION), ("generated", _now())],
    )
    head = data["headline"]
    page.add(Section(
        "Headline figures",
        "One row per run, from the view v_headline (separability, gap, retrieval, joint collapse point and effective "
        "rank, conformity fit r, cluster count and the local-dimension/accuracy correlation, mixing ratio): "
        + "; ".join(f"{r['label']}: {_headline(r)}" for r in data["compare"].to_dicts()),
        table=head.drop("dataset_id").to_dicts() if head.height else None,
        missing=None if head.height else "no measured runs",
    ))
    for sec in (core_sections(data, "each run", column="label") + geometry_sections(data, "each run", column="label")
                + topology_sections(data, "each run", column="label")):
        page.add(sec)
    return page


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique: concurrent flows may write the same report
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def export_charts(page: Page, folder: Path, fmt: str) -> list[Path]:
    """Each chart of a page as an SVG or PNG file (for papers), named after its section."""
    import re

    import vl_convert as vlc

    if fmt not in ("svg", "png"):
        raise ValueError(f"export format {fmt!r}: expected svg or png")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (title, spec) in enumerate(page.chart_specs(), start=1):
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60]
        path = folder / f"{i:02d}-{slug}.{fmt}"
        if fmt == "svg":
            path.write_text(vlc.vegalite_to_svg(spec), encoding="utf-8")
        else:
            path.write_bytes(vlc.vegalite_to_png(spec, scale=2))
        out.append(path)
    return out


def write_reports(home: DataHome, run_ids: list[str], *, export: str | None = None) -> list[Path]:
    """Write ``reports/run-<id>.html`` for each run and, for 2+ runs, ``reports/compare-<hash>.html``.

    With ``export="svg"`` or ``"png"``, also each chart as a file under ``reports/<page name>/``.
    """
    if not run_ids:
        return []
    with catalog.session(home, read_only=True) as con:
        data = _load(con, run_ids)
    found = set(data["runs"]["run_id"].to_list())
    unknown = [r for r in run_ids if r not in found]
    if unknown:
        raise KeyError(f"runs not in the catalog {home.catalog}: {', '.join(unknown)} (see `clipgeo runs`)")
    home.reports.mkdir(parents=True, exist_ok=True)
    pages = [(f"run-{r}", run_page(data, r)) for r in run_ids]
    if len(run_ids) > 1:
        digest = hashlib.sha1("|".join(sorted(run_ids)).encode()).hexdigest()[:8]
        pages.append((f"compare-{digest}", compare_page(data, run_ids)))
    paths = [_write(home.reports / f"{name}.html", page.render()) for name, page in pages]
    if export:
        for name, page in pages:
            export_charts(page, home.reports / name, export)
    return paths
