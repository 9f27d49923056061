"""Write the HTML reports from the catalog: one per run, one comparing the runs given.

Every chart and table reads one view (``sql/views/*_v_report_*.sql``, listed in
``RUN_VIEWS``): Python passes run ids, the views join labels, sample and bin. Reports never
recompute metrics;
deleting the report folder and running this again gives the same files apart from the
generation timestamp. A section whose table has no rows for a run says so instead of
failing.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from clipgeo.core.config import ANALYSIS_VERSION, DataHome
from clipgeo.store import catalog
from dashboards import charts
from dashboards.output import generated_at, use_current_views, write_page
from dashboards.page import STATUS_OK, Page, Section
from dashboards.trajectory import index_section

RECALL_CURVE_KS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100)  # as in the view v_report_recall_curve

# Every chart and table reads one view (sql/views/5x-7x): key -> (view, order of rows).
# Python passes only run ids; labels, sampling and binning live in the views.
RUN_VIEWS: dict[str, tuple[str, str]] = {
    "runs": ("v_runs", "label"),
    "headline": ("v_headline", "label"),
    "retrieval": ("v_report_retrieval", "run_id, direction, k"),
    "curve": ("v_report_recall_curve", "run_id, direction, k"),
    "gap": ("v_report_gap", "label"),
    "sep": ("v_report_separability", "label, vectors, features, eval_dataset_id"),
    "pca": ("v_report_pca_points", "run_id, modality, item_id"),
    "sections": ("v_report_sections", "run_id, section"),
    "geo_modality": ("v_report_geo_modality", "label, modality"),
    "geo_cross": ("v_report_geo_cross", "label"),
    "geo_subspaces": ("v_report_subspaces", "label, setting"),
    "dist_hist": ("v_report_dist_to_mean_hist", "label, modality, bin"),
    "conf_hist": ("v_report_conformity_hist", "label, modality, bin"),
    "eigen": ("v_report_ellipsoid_spectrum", "label, modality, axis"),
    "tilt": ("v_report_tilt", "label, modality, axis"),
    "points": ("v_report_points", "run_id, modality, item_id"),
    "fit": ("v_report_conformity_fit", "run_id, modality, mean, x"),
    "shift": ("v_report_origin_shift", "label, alpha"),
    "extremes": ("v_report_conformity_extremes", "run_id, modality, kind DESC, rank"),
    "sepmat": ("v_report_separability_matrix", "label, train_set, eval_set, normalized DESC, pca"),
    "nearest": ("v_report_nearest_hist", "run_id, modality, max_cos"),
    "cos_hist": ("v_report_cosine_hist", "label, kind, bin_lo"),
    "cos_summary": ("v_report_cosine_summary", "label, kind"),
    "mixing": ("v_report_mixing", "label"),
    "lines": ("v_report_paired_lines", "label, plane, pair_id"),
    "spectra": ("v_report_spectra", "label, scope, index"),
    "spectra_summary": ("v_report_spectra_summary", "label, scope"),
    "cluster_spectra": ("v_report_cluster_spectra", "label, cluster, index"),
    "clusters": ("v_report_clusters", "label, cluster"),
    "cluster_corr": ("v_report_cluster_correlation", "label"),
    "umap_grid": ("v_report_umap_grid", "run_id, n_neighbors, min_dist, modality, item_index"),
}
from dashboards import reproduction  # noqa: E402  (issue 25: reference values, estimators)

RUN_VIEWS.update(reproduction.VIEWS)
DATASET_VIEWS: dict[str, tuple[str, str]] = {
    "rejects": ("v_report_rejects", "dataset_id, stage, reason"),
    "counts": ("v_report_dataset_counts", "dataset_id"),
}
TEXT_COLUMNS_KEPT = {"caption"}  # dataset text shown as it is (escaped), never rewritten as a path


class Paths:
    """Shareable paths: inside the data home relative to it, outside it the file name plus a
    short content hash (``name #1a2b3c4d5e``); ``full=True`` keeps every path as stored."""

    # an absolute path of 2+ parts, at the start or after a space, quote, bracket, '=', ':' or '@'
    _ABS = re.compile(r"(?:(?<=^)|(?<=[\s'\"(\[=:@]))/(?:[^\s/'\"<>:;,()]+/)+[^\s/'\"<>:;,()]+")

    def __init__(self, home: Path, *, full: bool = False):
        self.root = str(home)
        self.full = full
        self._seen: dict[str, str] = {}

    def path(self, p: str | None) -> str | None:
        if self.full or not p or not p.startswith("/"):
            return p
        if p == self.root:
            return "."
        if p.startswith(self.root + "/"):
            return p[len(self.root) + 1:]
        if p not in self._seen:
            f = Path(p)
            try:
                h = hashlib.sha256()
                with f.open("rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                digest = h.hexdigest()[:10]
            except OSError:
                digest = "not found"
            self._seen[p] = f"{f.name} #{digest}"
        return self._seen[p]

    def text(self, s: str | None) -> str | None:
        """Every absolute path inside free text, made shareable."""
        if self.full or not s or "/" not in s:
            return s
        return self._ABS.sub(lambda m: self.path(m.group(0)) or "", s)

    def frame(self, df: pl.DataFrame) -> pl.DataFrame:
        """The frame with every text column (but captions) made shareable."""
        if self.full or not df.height:
            return df
        out = []
        for name, dtype in df.schema.items():
            if name in TEXT_COLUMNS_KEPT:
                continue
            if dtype == pl.String and df[name].str.contains("/", literal=True).any():
                out.append(pl.col(name).map_elements(self.text, return_dtype=pl.String))
            elif dtype == pl.List(pl.String):
                out.append(pl.col(name).map_elements(lambda xs: [self.text(x) for x in xs], return_dtype=pl.List(pl.String)))
        return df.with_columns(out) if out else df


def view_query(view: str, run_ids: list[str], extra: str = "", key: str = "run_id") -> str:
    """The `clipgeo sql` command that returns a section's rows."""
    ids = ", ".join("'" + r.replace("'", "''") + "'" for r in run_ids)
    cond = f"{key} = {ids}" if len(run_ids) == 1 else f"{key} IN ({ids})"
    return f'clipgeo sql "select * from {view} where {cond}{extra}"'


def load_view(con, view: str, order: str, ids: list[str], paths: Paths, key: str = "run_id") -> pl.DataFrame:
    """The rows of one view for the given run (or dataset) ids, paths made shareable."""
    return paths.frame(catalog.query(con, f"SELECT * FROM {view} WHERE list_contains($ids, {key}) ORDER BY {order}", {"ids": ids}))


def _load(con, run_ids: list[str], paths: Paths) -> dict[str, pl.DataFrame]:
    data = {k: load_view(con, v, o, run_ids, paths) for k, (v, o) in RUN_VIEWS.items()}
    datasets = sorted(set(data["runs"]["dataset_id"].drop_nulls().to_list()))
    for k, (v, o) in DATASET_VIEWS.items():
        data[k] = load_view(con, v, o, datasets, paths, key="dataset_id")
    return data


def _provenance(run: dict, counts: pl.DataFrame, paths: Paths) -> list[tuple[str, str]]:
    c = counts.filter(pl.col("dataset_id") == run["dataset_id"]).to_dicts() if counts.height else []
    kept = (f"kept {c[0]['n_images_kept']} images and {c[0]['n_captions_kept']} captions, dropped "
            f"{c[0]['n_images_dropped']} images and {c[0]['n_captions_dropped']} captions (see Rejected inputs)"
            if c else f"{run['n_images']} images, {run['n_texts']} captions")
    return [
        ("run", f"{run['run_id']} ({run['status']})"),
        ("model", f"{run['model_name'] or 'unnamed model'} — {run['model_id']}"),
        ("checkpoint", f"{paths.path(run['pretrained']) or '-'} (sha256 {run['checkpoint_sha256'] or 'n/a'})"),
        ("training objective", f"{run['objective'] or 'unknown'}{' + Hopfield' if run['hopfield'] else ''}"),
        ("dataset", f"{run['dataset_id']} ({run['dataset_source'] or 'source not recorded'}; {kept}); embedded {run['n_images']} images, "
                    f"{run['n_texts']} captions"),
        ("vectors", "L2-normalised only (imported)" if run["vectors_normalized"] else "raw (pre-normalisation) and normalised"),
        ("analysis", f"version {run['analysis_version']}, measured {run['analyzed_at']}"),
    ]


def _state(df: pl.DataFrame, sections: pl.DataFrame | None, section: str | None, what: str) -> tuple[str, str | None]:
    """(status for the table of contents, why the section has no rows)."""
    if df.height:
        return STATUS_OK, None
    if sections is not None and section is not None:
        hit = sections.filter(pl.col("section") == section)
        if hit.height and hit["status"][0] != "ok":
            return hit["status"][0], f"section '{section}' {hit['status'][0]}: {hit['message'][0]}"
        if not hit.height:
            return "not measured", (f"section '{section}' has not been measured for this run: `clipgeo analyse` measures "
                                    f"every section of a pipeline's runs; on a `clipgeo.measure(...)` result, "
                                    f"`m.compute(\"{section}\")` (or reading one of its tables from `m.tables`) "
                                    "measures it, then `m.report()` shows it")
    return "empty", f"no {what} rows stored for this run"


@dataclass
class Ctx:
    f: dict[str, pl.DataFrame]  # each view's rows for the page's runs
    run_ids: list[str]
    who: str
    column: str | None  # "label" on the comparison page: one panel per run
    width: int | str  # chart (or panel) width

    def section(self, title: str, caption: str, key: str, section: str | None, what: str, *, chart=None, table=None,
                rows: pl.DataFrame | None = None, extra: str = "") -> Section:
        """One report section from one view: ``chart``/``table`` build from its rows when there are any."""
        df = self.f[key] if rows is None else rows
        status, missing = _state(df, self.f["sections"], section, what)
        view = RUN_VIEWS[key][0]
        return Section(
            title, caption + _ran_on(self.f["sections"], section),
            chart=chart(df) if chart is not None and df.height else None,
            table=self._rows(table(df)) if table is not None and df.height else None,
            missing=missing, status=status, views=(view,), query=view_query(view, self.run_ids, extra),
        )


    def _rows(self, rows: list[dict]) -> list[dict]:
        """Table rows; on a run's own page without the label column (the page title names the run)."""
        return rows if self.column else [{k: v for k, v in r.items() if k != "label"} for r in rows]


def _ran_on(sections: pl.DataFrame, section: str | None) -> str:
    """What a measurement section's vectors were (``measure_samples``: every vector streamed, all
    of a small run, or a stated hash sample; for retrieval the gallery definition), per run."""
    if section is None or not sections.height or "ran_on" not in sections.columns:
        return ""
    rows = sections.filter((pl.col("section") == section) & pl.col("ran_on").is_not_null()).to_dicts()
    if not rows:
        return ""
    if len(rows) == 1:
        return f" Computed on: {rows[0]['ran_on']}."
    return " Computed on: " + "; ".join(f"{r['label']}: {r['ran_on']}" for r in rows) + "."


def _sampled_note(points: pl.DataFrame, what: str) -> str:
    p = points.filter(pl.col(what).is_not_null()) if points.height else points
    if not p.height:
        return ""
    totals = p.group_by("run_id", "modality").agg(pl.col("n_total").first(), pl.len().alias("shown"))
    cut = totals.filter(pl.col("n_total") > pl.col("shown"))
    if not cut.height:
        return " All points shown."
    return " Sampled for responsiveness: " + "; ".join(
        f"{r['modality']} {r['shown']} of {r['n_total']}" for r in cut.to_dicts()
    ) + " points shown (deterministic: smallest hash(item_id) first, view v_report_points)."


def _val(x, fmt: str = ".3f", why: str | None = None) -> str:
    """A figure as text; a missing one (None or NaN) as "n/a", with the stored reason when there is one."""
    if x is None or (isinstance(x, float) and x != x):
        return f"n/a ({why.strip().rstrip(';').strip()})" if why and why.strip() else "n/a"
    return format(x, fmt)


def _per_run(df: pl.DataFrame, fmt) -> str:
    """One clause per run (``fmt(row)`` for the first row of each label)."""
    if not df.height:
        return ""
    return "; ".join(fmt(g.row(0, named=True)) for _, g in df.group_by("label", maintain_order=True))


def _r1_text(r: dict) -> str:
    """'run 27.20% (chance 0.10%, 272.0× chance; 1,000 queries, 1,000 candidates)', with exact ties if any."""
    ch = (f"chance {r['chance']:.2%}, {r['recall_over_chance']:.1f}× chance"
          if r.get("recall_over_chance") is not None else f"chance {_pct(r.get('chance'))}")
    return (f"{r['label']} {r['recall']:.2%} ({ch}{_ties(r)}; {r['n_queries']:,} queries, "
            f"{r['n_candidates']:,} candidates)")


def core_sections(c: Ctx) -> list[Section]:
    """Retrieval, recall curves, gap, separability and PCA (shared by the run and comparison reports)."""
    f, who, column, w = c.f, c.who, c.column, c.width
    r1 = f["retrieval"].filter((pl.col("direction") == "text_to_image") & (pl.col("k") == 1))
    full = f["sep"].filter((pl.col("vectors") == "normalized") & (pl.col("features") == "full"))
    return [
        c.section(
            "Cross-modal retrieval (Table II)",
            f"Exact retrieval on normalised vectors of {who}. Text→image: a caption's own image in the top k; "
            "image→text: any caption of the image in the top k (CLIP_benchmark). Log scale, so results near chance "
            "stay readable; black ticks: chance (a random ranking). Text→image R@1: "
            + _per_run(r1, _r1_text) + ". Ranks count the wrong items scoring strictly higher (exact ties in "
            "favour); where exact ties exist the pessimistic recall (ties against) is given beside it.",
            "retrieval", "retrieval", "retrieval",
            chart=lambda d: charts.retrieval_bars(d, column=column, width=w),
        ),
        c.section(
            "Recall@k curves",
            f"recall@k for k = 1…{RECALL_CURVE_KS[-1]} from the stored per-query ranks of {who}, log–log; dotted: "
            "chance at each k" + ("; colour = run, dash = direction." if column else "."),
            "curve", "retrieval", "retrieval rank",
            chart=lambda d: charts.recall_curve(d, color="label" if column else "direction_label",
                                                width="container"),
        ),
        c.section(
            "Modality gap (Liang et al.)",
            f"gap = ‖mean(x̂_I) − mean(x̂_T)‖ on normalised vectors of {who}; gap_raw the same on raw vectors; "
            "paired distance = mean ‖x̂_I − x̂_T‖ over image–caption pairs. Measured gap: "
            + _per_run(f["gap"], lambda r: f"{r['label']} {r['gap']:.3f}"),
            "gap", "modality_gap", "modality-gap",
            table=lambda d: d.drop("run_id").to_dicts(),
        ),
        c.section(
            "Modality separability (Table I)",
            f"Soft-margin linear SVM (C = 1) separating image from text vectors of {who}, image = positive class, "
            "held-out 30% of image–caption pairs; full vectors and their top-2 principal components. Held-out accuracy "
            "on normalised vectors (chance 50%): " + _per_run(full, lambda r: f"{r['label']} {r['accuracy']:.1%}"),
            "sep", "separability", "separability",
            chart=lambda d: charts.separability_bars(d, column=column, width=w),
            table=lambda d: d.select("label", "vectors", "features", "accuracy", "precision", "recall", "n_train",
                                     "n_test").to_dicts(),
        ),
        c.section(
            "Top-2 principal components (Fig. 2)",
            f"Normalised image and caption vectors of {who} projected on the two leading principal components of both "
            "modalities together (a bounded sample per modality is stored"
            + (": " + _per_run(f["pca"].group_by("label", "modality", maintain_order=True).agg(pl.len().alias("n"))
                               .group_by("label", maintain_order=True).agg(pl.concat_str(
                                   pl.col("modality"), pl.lit(" "), pl.col("n").cast(pl.String)).str.join(", ").alias("t")),
                               lambda r: r["t"] + (f" ({r['label']})" if column else "")) + " points"
               if f["pca"].height else "")
            + "). Click the legend to isolate a modality.",
            "pca", "pca", "PCA",
            chart=lambda d: charts.pca_scatter(d, column=column, width=w),
        ),
    ]


def geometry_sections(c: Ctx) -> list[Section]:
    """The Double-Ellipsoid figures and tables (shared by the run and comparison reports)."""
    f, who, column, w = c.f, c.who, c.column, c.width
    mod, cross = f["geo_modality"], f["geo_cross"]
    kind = ", ".join(sorted(set(mod["vectors"].to_list()))) if mod.height else "raw"
    heads = mod.to_dicts()
    out = [
        c.section(
            "P2 — thin shell: distribution of ‖x − μ‖",
            f"Histogram of each sample's distance from the mean of its modality ‖x − μ‖ ({kind} vectors; not the norm "
            f"‖x‖) for {who}. A thin shell has a small std/mean and no mass near the mean. "
            + "; ".join(f"{r['modality']} ({r['label']}, N = {r['n']}): std/mean of ‖x − μ‖ "
                        f"{_val(r.get('dist_to_mean_std_over_mean'))} (of the norm ‖x‖: "
                        f"{_val(r.get('length_std_over_mean'))}), share within half the median distance "
                        f"{_val(r.get('dist_to_mean_frac_near_mean'))}" for r in heads),
            "dist_hist", "double_ellipsoid", "shell",
            chart=lambda d: charts.histogram_bars(d, x_title="distance from the mean ‖x − μ_modality‖", column=column,
                                                  width=w),
        ),
        c.section(
            "P3 — ellipsoid: covariance spectrum (semi-axes √λ)",
            f"Every semi-axis √λ_k of each modality's covariance (eigenvalues λ) for {who}, log scale. Effective rank "
            "(λ-entropy, Roy & Vetterli) = exp(entropy of λ/Σλ); (σ-entropy) = the same with p ∝ σ = √λ. "
            + "; ".join(f"{r['modality']} ({r['label']}, N = {r['n']}, d = {r['d']}): "
                        + (f"anisotropy (largest/median semi-axis) {_val(r.get('ellipsoid_anisotropy'), '.2f')}, "
                           f"effective rank (λ-entropy, Roy & Vetterli) "
                           f"{_val(r.get('ellipsoid_effective_rank_lambda_entropy'), '.1f')}, (σ-entropy) "
                           f"{_val(r.get('ellipsoid_effective_rank_sigma_entropy'), '.1f')}, radius CV Euclidean "
                           f"{_val(r.get('euclidean_radius_cv'))} vs Mahalanobis {_val(r.get('mahalanobis_radius_cv'))}"
                           if (r.get("covariance_status") or "ok") == "ok" else
                           f"no anisotropy, effective rank or Mahalanobis radius: {r.get('covariance_message')}")
                        for r in heads),
            "eigen", "double_ellipsoid", "eigenvalue",
            chart=lambda d: charts.spectrum_lines(d, column=column, width=w),
        ),
        c.section(
            "P4 — tilt: alignment of principal axes with the coordinate axes",
            f"Largest absolute coordinate of each top principal axis for {who} (1 = axis-aligned; dashed: 1/√d, fully "
            "tilted). " + "; ".join(f"{r['label']}: angle between the modalities' first axes "
                                    f"{r['first_axis_angle_deg']:.1f}°" for r in cross.to_dicts()),
            "tilt", "double_ellipsoid", "tilt",
            chart=lambda d: charts.tilt_points(d, column=column, width=w),
        ),
        c.section(
            "P5 — off-centre: how far each ellipsoid's centre is from the origin",
            f"‖μ‖, ‖μ‖ / mean‖x‖ and ‖μ‖ / largest semi-axis per modality for {who}; cos(μ_I, μ_T): "
            + "; ".join(f"{r['label']} {r['cos_between_means']:.3f}" for r in cross.to_dicts()),
            "geo_modality", "double_ellipsoid", "off-centre",
            table=lambda d: d.select("label", "modality", "vectors", "offcentre_mean_norm",
                                     "offcentre_mean_norm_over_mean_length",
                                     "offcentre_mean_norm_over_max_semi_axis").to_dicts(),
        ),
        c.section(
            "P1 — separate subspaces: principal angles",
            f"Principal angles between the image and text top-k principal subspaces (k covering 90% and 99% of variance, "
            f"and fixed k) and the share of one modality's variance captured by the other's subspace, for {who}.",
            "geo_subspaces", "double_ellipsoid", "subspace",
            table=lambda d: d.drop("run_id").to_dicts(),
        ),
    ]
    pts = f["points"].filter(pl.col("conformity").is_not_null()) if f["points"].height else f["points"]
    fits = f["fit"]
    sc = c.section(
        "Conformity against cosine to the mean",
        f"Per sample, conformity C(v) = mean cos(v, other samples of its modality) against the cosine to the mean of "
        f"its modality, with the fit C ≈ a·cos + b (dashed, view v_report_conformity_fit) for {who}. The radio button "
        "picks the mean: the raw mean μ (the Double-Ellipsoid figure) or the mean of the unit vectors m̂ (the DE-CLIP "
        "notebook's relation, exactly affine: r = 1). "
        + "; ".join(f"{r['modality']} ({r['label']}, N = {r.get('conformity_fit_n') or r['n']}): "
                    + (f"raw mean a {_val(r.get('conformity_fit_raw_mean_a'))}, b {_val(r.get('conformity_fit_raw_mean_b'))}, "
                       f"Pearson r {_val(r.get('conformity_fit_raw_mean_pearson_r'))}, Spearman ρ "
                       f"{_val(r.get('conformity_fit_raw_mean_spearman_rho'))}; unit mean a "
                       f"{_val(r.get('conformity_fit_unit_mean_a'))}, b {_val(r.get('conformity_fit_unit_mean_b'))}, "
                       f"Pearson r {_val(r.get('conformity_fit_unit_mean_pearson_r'))}"
                       if r.get("conformity_fit_raw_mean_a") is not None or r.get("conformity_fit_unit_mean_a") is not None
                       else f"no fit ({(r.get('conformity_fit_message') or 'not stored').strip().rstrip(';')})")
                    for r in heads)
        + "." + _sampled_note(f["points"], "conformity"),
        "points", "double_ellipsoid", "per-sample", rows=pts,
        chart=lambda d: charts.conformity_scatter(f["points"], fits, column=column, width=w),
    )
    sc.views += ("v_report_conformity_fit",)
    out.append(sc)
    out.append(c.section(
        "Conformity distributions",
        f"Distribution of conformity per modality for {who}. Divergence between them: "
        + "; ".join(f"{r['label']}: Jensen–Shannon {r['conformity_js_divergence']:.3f} bits, KS "
                    f"{r['conformity_ks_statistic']:.3f}" for r in cross.to_dicts()),
        "conf_hist", "double_ellipsoid", "conformity",
        chart=lambda d: charts.histogram_bars(d, x_title="conformity C(v)", column=column, width=w),
    ))
    shift = f["shift"]
    best = []
    for label in shift["label"].unique(maintain_order=True).to_list() if shift.height else []:
        sh = shift.filter(pl.col("label") == label)
        b = sh.sort("infonce").row(0, named=True)
        at0 = sh.filter(pl.col("alpha") == 0)
        best.append(f"{label}: lowest InfoNCE at α = {b['alpha']:.2f} ({b['infonce']:.3f} vs {at0['infonce'][0]:.3f} at α = 0)"
                    if at0.height else f"{label}: lowest InfoNCE at α = {b['alpha']:.2f}")
    out.append(c.section(
        "Origin shift: is the off-origin placement beneficial?",
        f"Each modality shifted by −α·μ and re-normalised, for {who}: alignment and uniformity (Wang & Isola), symmetric "
        "InfoNCE at the model's temperature, top-1 retrieval both ways (on a stated image subsample). " + "; ".join(best),
        "shift", "origin_shift", "origin-shift",
        chart=lambda d: charts.shift_curves(d, color="label" if column else None),
    ))
    out.append(c.section(
        "Most and least conforming samples",
        f"The 10 most and least conforming samples per modality for {who}, with captions (long ones cut: hover for the "
        "full text).",
        "extremes", "double_ellipsoid", "conformity",
        table=lambda d: d.select(*(["label"] if column else []), "modality", "kind", "rank", "item_id", "conformity",
                                 "caption").to_dicts(),
    ))
    return out


def _umap_note(u: pl.DataFrame) -> str:
    return _sampled_note(u, "x2d").replace("points shown", "laid-out points shown").replace(
        "All points shown", "All laid-out points shown")


def topology_sections(c: Ctx) -> list[Section]:
    """The figures and tables of the topological paper (shared by the run and comparison reports)."""
    f, who, column, w = c.f, c.who, c.column, c.width
    out = [c.section(
        "Table I — separability across datasets (train × eval)",
        f"Linear SVM on modality labels for {who}, trained on one dataset's pairs and evaluated on the held-out pairs of "
        "the same and of the other dataset embedded by the same model (the reference run); raw and normalised vectors, "
        "full and top-2 PCs. Chance: 50%.",
        "sepmat", "separability_matrix", "separability-matrix",
        table=lambda d: d.select("label", "train_set", "eval_set", "normalized", "pca", "n_features", "accuracy",
                                 "precision", "recall", "n_test").to_dicts(),
    )]
    nr = f["nearest"]
    out.append(c.section(
        "Fig. 1 — cosine to the nearest reference sample",
        f"Per sample of {who}, the highest cosine to any sample of the same modality in the reference (training-like) "
        "dataset embedded by the same model; histogram (bins of 0.02)."
        + (f" Reference: {nr['reference_dataset_id'][0]}." if nr.height else ""),
        "nearest", "nearest_reference", "nearest-reference",
        chart=lambda d: charts.density_lines(d, x="max_cos", x_title="max cos to the reference set", color="modality",
                                             column=column, width=w),
    ))
    cs = f["cos_summary"]
    out.append(c.section(
        "Fig. 3 — cosine similarity distributions",
        f"Paired image–text, unpaired image–text, image–image and text–text cosines of {who} (normalised vectors; large "
        "populations on a fixed-seed sample of pairs, see n_pairs; table: view v_report_cosine_summary). Means: "
        + _per_run(cs, lambda r: r["label"]) + " — "
        + "; ".join(f"{r['kind']} {r['mean']:.3f}" for r in cs.to_dicts()[:8] if r.get("mean") is not None),
        "cos_hist", "cosines", "cosine",
        chart=lambda d: charts.density_lines(d, x="cos", x_title="cosine", color="kind", column=column, width=w),
    ))
    if not column and cs.height:
        out[-1].table = c._rows(cs.drop("run_id").to_dicts())
        out[-1].views += ("v_report_cosine_summary",)
    pts = f["points"]
    u = pts.filter(pl.col("x2d").is_not_null()) if pts.height else pts
    mx = f["mixing"]
    mix_caption = _per_run(mx, lambda r: f"{r['label']}: mean share of other-modality neighbours (k = {int(r['k'])}) "
                                         f"{r['mean_share_original']:.3f} in the original space, "
                                         f"{r['mean_share_layout']:.3f} in the layout (mixing ratio "
                                         f"{r['mixing_ratio_original']:.2f} / {r['mixing_ratio_layout']:.2f} of what "
                                         "fully mixed modalities give)")
    if column:
        out.append(c.section(
            "Figs. 4, 5, 7 — UMAP of the joint embedding",
            f"UMAP (cosine input, haversine output, fixed seed) of the first pairs' normalised vectors for {who}. "
            + mix_caption + "." + _umap_note(pts),
            "points", "umap", "UMAP", rows=u,
            chart=lambda d: charts.umap_scatter(pts, column=column, width=w),
        ))
    else:
        out.append(c.section(
            "Figs. 4, 5, 7 — UMAP of the joint embedding, linked to conformity",
            f"UMAP (cosine input, haversine output, fixed seed) of the first pairs' normalised vectors of {who}, shown "
            "equirectangular after rotating the mean direction to the centre; brush it to highlight the same samples in "
            "the conformity plot. " + mix_caption + "." + _umap_note(pts),
            "points", "umap", "UMAP", rows=u,
            chart=lambda d: charts.umap_linked(pts),
        ))
    out.append(c.section(
        "Modality mixing share",
        "For each point, the share of its k nearest neighbours that are of the other modality, in the original space and "
        "in the 2-D layout; mixing ratio = mean share / the share fully mixed modalities would give (1 = fully mixed).",
        "mixing", "umap", "mixing",
        table=lambda d: d.select("label", "k", "mean_share_original_image", "mean_share_original_text",
                                 "mixing_ratio_original", "mean_share_layout_image", "mean_share_layout_text",
                                 "mixing_ratio_layout").to_dicts(),
    ))
    for plane, title in (("pca", "top-2 principal components"), ("umap", "UMAP plane")):
        ln = f["lines"].filter(pl.col("plane") == plane) if f["lines"].height else f["lines"]
        n_pairs = (_per_run(ln.group_by("label", maintain_order=True).agg(pl.col("pair_id").n_unique().alias("n")),
                            lambda r: f"{r['n']:,} image–caption pairs" + (f" ({r['label']})" if column else ""))
                   if ln.height else "")
        out.append(c.section(
            f"Figs. 6, 8 — paired lines ({title})",
            f"{n_pairs or 'Image–caption pairs'} of {who} in the {title}, each joined by a line (blue: image, orange: "
            "caption). Long parallel lines mean separated but coordinated modalities.",
            "lines", "umap", "paired-line", rows=ln, extra=f" and plane = '{plane}'",
            chart=lambda d: charts.paired_line_chart(d, column=column, width=w),
        ))
    ss = f["spectra_summary"]

    def spec_txt(r: dict) -> str:
        head = f"{r['label']} {r['scope']} (N = {int(r['n']) if r.get('n') is not None else '?'})"
        if (r.get("status") or "ok") != "ok":
            return f"{head}: {r.get('status')} — {r.get('message')}"
        ci = r.get("collapse_index")
        return (f"{head}: collapse at k = {int(ci) if ci is not None else 'n/a'}, effective rank (λ-entropy, Roy & "
                f"Vetterli) {_val(r.get('effective_rank_lambda_entropy'), '.1f')}, (σ-entropy) "
                f"{_val(r.get('effective_rank_sigma_entropy'), '.1f')}")
    thr = ss["collapse_threshold"].drop_nulls() if ss.height else None
    spec = c.section(
        "Figs. 10–12 — covariance eigenvalue spectra",
        f"Covariance eigenvalues λ_k/λ_1 (log10, as the paper plots them; values at or below 10⁻¹⁶, zero to double "
        f"precision, not drawn) of the normalised vectors of {who}, per modality and joint. Collapse point = first k with λ_k/λ_1 below the threshold"
        + (f" ({thr[0]:g})" if thr is not None and thr.len() else "")
        + "; effective rank (λ-entropy, Roy & Vetterli) = exp(entropy of λ/Σλ), effective rank (σ-entropy) = the "
        "same with p ∝ σ (table: view v_report_spectra_summary). " + "; ".join(spec_txt(r) for r in ss.to_dicts()),
        "spectra", "spectra", "spectrum",
        chart=lambda d: charts.eigenvalue_curves(d, column=column, width=w),
    )
    stale = ss.filter(pl.col("status") == "stale") if ss.height and "status" in ss.columns else ss.clear()
    if spec.chart is None and stale.height:
        spec.status, spec.missing = "stale", f"no covariance eigenvalues stored: {stale['message'][0]}"
    out.append(spec)
    if not column and ss.height:
        cols = ["scope", "status", "n", "d", "lambda_1", "collapse_index", "collapse_threshold",
                "effective_rank_lambda_entropy", "effective_rank_sigma_entropy", "largest_drop_index",
                "largest_drop_decades", "sigma_1"]  # the reasons (message) are in the caption
        out[-1].table = c._rows(ss.select([k for k in cols if k in ss.columns]).to_dicts())
        out[-1].views += ("v_report_spectra_summary",)
    cc, cl, cspec = f["cluster_corr"], f["clusters"], f["cluster_spectra"]
    corr_txt = _per_run(cc, lambda r: _localdim_text(r, cl))
    if not column and u.height:
        out.append(c.section(
            "Fig. 13 — HDBSCAN clusters on the UMAP layout",
            f"Clusters found by HDBSCAN on the sphere coordinates of the layout of {who}: the nine largest by colour, "
            "the rest as 'other', HDBSCAN noise as 'noise'. " + corr_txt + ".",
            "points", "clusters", "cluster", rows=u,
            chart=lambda d: charts.umap_scatter(pts, color="cluster_group", width=w),
        ))
    out.append(c.section(
        "Fig. 14 — per-cluster spectra",
        f"Joint covariance eigenvalues λ_k/λ_1 of each cluster of {who} (log10, the quantity of Figs. 10–12; σ_k/σ_1 = "
        "√(λ_k/λ_1) in the tooltip), against k / number of values. Clusters of different sizes are made comparable by "
        "measuring each on random subsamples of one common size m (by default the smallest cluster's size, at most "
        "d + 1), so every curve has m − 1 values: each curve is the mean of log10 λ_k/λ_1 over the subsamples. "
        + _per_run(cspec, lambda r: _spectra_text(r, cspec)) + ". Colour: cluster number. The local dimension of "
        "Fig. 15 is half the mean height of a curve (the mean of log10 σ_k/σ_1).",
        "cluster_spectra", "clusters", "cluster-spectrum",
        chart=lambda d: charts.cluster_spectrum_curves(d, column=column, width=w),
    ))
    out.append(c.section(
        "Fig. 15 — local dimension against per-cluster retrieval",
        f"Per cluster of {who} whose local dimension is defined (at least m joint members; fewer points than "
        "dimensions is fine, every cluster is measured on m of them): local dimension = mean log10 σ_k/σ_1 of its "
        "joint subsamples (Fig. 14) against the top-1 retrieval of its members (from the run's stored retrieval "
        "ranks, whole gallery); erank_sigma_entropy_joint = effective rank (σ-entropy) of the same subsamples. "
        + corr_txt + ".",
        "clusters", "clusters", "cluster",
        chart=lambda d: charts.localdim_vs_accuracy(d, column=column, width=w),
        table=None if column else (lambda d: d.select("label", "cluster", "n_points", "sample_size", "auc_joint",
                                                     "erank_sigma_entropy_joint", "top1", "status",
                                                     "message").to_dicts()),
    ))
    if not column:
        out.append(c.section(
            "Figs. 16–17 — UMAP hyperparameter grid",
            f"Layouts of {who} for n_neighbors (rows) × min_dist (columns), at most 500 points per modality and cell.",
            "umap_grid", "umap_grid", "UMAP-grid",
            chart=lambda d: charts.umap_grid_chart(d),
        ))
    return out


def _drawn_clusters(clusters: pl.DataFrame, label: str) -> pl.DataFrame:
    """The rows of Fig. 15 that its chart draws (charts.LOCALDIM_DRAWN): local dimension and
    accuracy both defined."""
    if not clusters.height:
        return clusters
    return clusters.filter((pl.col("label") == label) & pl.col("auc_joint").is_not_null() & pl.col("auc_joint").is_finite()
                           & pl.col("top1").is_not_null())


def _localdim_text(r: dict, clusters: pl.DataFrame) -> str:
    """'run: 57 of 57 clusters drawn (m = 31), Pearson r 0.503, Spearman ρ 0.41', counted from the
    drawn rows; a correlation over fewer than 5 of them is 'n/a (reason)'."""
    from clipgeo.topology.clusters import MIN_CORRELATION_POINTS

    drawn = _drawn_clusters(clusters, r["label"])
    n, total = drawn.height, r.get("n_clusters") or 0
    m = r.get("sample_size")
    head = f"{r['label']}: {n} of {total} clusters drawn" + (f" (subsample size m = {m})" if m else "")
    if total > n:
        head += f", {total - n} with fewer than m joint members not drawn"
    pr, sr = r.get("pearson_r"), r.get("spearman_rho")
    defined = pr is not None and pr == pr and sr is not None and sr == sr
    if n < MIN_CORRELATION_POINTS or not defined:
        why = (f"{n} cluster(s) drawn: a correlation needs at least {MIN_CORRELATION_POINTS}"
               if n < MIN_CORRELATION_POINTS else (r.get("message") or "undefined"))
        return head + f"; Pearson r n/a ({why})"
    return head + f"; over these {n}: Pearson r {pr:.3f}, Spearman ρ {sr:.3f}"


def _spectra_text(r: dict, spectra: pl.DataFrame) -> str:
    s = spectra.filter(pl.col("label") == r["label"])
    return (f"{r['label']}: {s['cluster'].n_unique()} clusters drawn, m = {int(s['sample_size'].max())} members, "
            f"{int(s['n_subsamples'].max())} subsample(s) each")


def rejects_sections(f: dict[str, pl.DataFrame]) -> list[Section]:
    """One section per dataset: rejected inputs by stage and reason, counted once, with examples."""
    out = []
    for d in f["counts"].to_dicts():
        rows = f["rejects"].filter(pl.col("dataset_id") == d["dataset_id"]) if f["rejects"].height else f["rejects"]
        n = int(rows["n"].sum()) if rows.height else 0
        out.append(Section(
            f"Rejected inputs — {d['dataset_name']}",
            f"Inputs of dataset {d['dataset_id']} that were dropped, by stage and reason (each bad input counted once), "
            f"with up to a few examples. Kept {d['n_images_kept']} images and {d['n_captions_kept']} captions; dropped "
            f"{d['n_images_dropped']} images and {d['n_captions_dropped']} captions.",
            table=rows.select("stage", "reason", "n", "examples").to_dicts() if rows.height else None,
            html_block="" if rows.height else "<p>No input was rejected.</p>",
            status=STATUS_OK if not n else f"{n} rejected",
            views=("v_report_rejects", "v_report_dataset_counts"),
            query=view_query("v_report_rejects", [d["dataset_id"]], key="dataset_id"),
        ))
    return out


def _ties(r: dict) -> str:
    """', 3 queries with exact ties: 27.10% if ties count against' (nothing when there are none)."""
    n, p = r.get("n_tied_queries"), r.get("recall_pessimistic")
    if not n or p is None:
        return ""
    return f", {n} queries with exact ties: {p:.2%} if ties count against"


def _pct(x) -> str:
    return "–" if x is None else f"{x:.2%}"


def _num(x, fmt=".3f") -> str:
    return "–" if x is None else format(x, fmt)


def _recall_pair(h: dict, d: str) -> str:
    """recall@1, and when exact ties exist the pessimistic value beside it (ties counted against)."""
    r, p, n = h.get(f"{d}_r1"), h.get(f"{d}_r1_pessimistic"), h.get(f"{d}_n_tied_queries")
    if r is not None and p is not None and (n or p != r):
        return f"{_pct(r)} – {_pct(p)} ({n or 0} queries with exact ties: ties in favour – against)"
    return _pct(r)


def headline_rows(h: dict, embed_dim: int | None) -> list[tuple[str, str, str, str]]:
    """The headline figures of one run (a row of view v_headline) named for people:
    ``(name, value, chance level or reference, note)``; a figure that is missing on a small
    sample shows the stored reason. The run page's block and the comparison table read it."""
    def ratio(v, ch):
        return f"{v / ch:.1f}× chance" if v is not None and ch else ""
    n_txt = f"N = {h.get('n_images')} images, {h.get('n_texts')} captions"
    see_above = f"{h.get('joint_spectrum_status')}: see above" if h.get("joint_spectrum_message") else None
    rows = [
        ("text → image recall@1", _recall_pair(h, "t2i"), f"chance {_pct(h.get('t2i_r1_chance'))}",
         ratio(h.get("t2i_r1"), h.get("t2i_r1_chance"))),
        ("image → text recall@1", _recall_pair(h, "i2t"), f"chance {_pct(h.get('i2t_r1_chance'))}",
         ratio(h.get("i2t_r1"), h.get("i2t_r1_chance"))),
        ("modality gap ‖mean x̂_I − mean x̂_T‖", _num(h.get("gap")), "0 = no gap; 2 = opposite", n_txt),
        ("modality separability (linear SVM, held out)", _pct(h.get("separability_accuracy")), "chance 50.00%",
         "separate subspaces" if (h.get("separability_accuracy") or 0) > 0.9 else ""),
        ("mixing ratio in the UMAP layout", _num(h.get("mixing_ratio_layout"), ".2f"), "1 = fully mixed modalities", ""),
        ("joint effective rank (λ-entropy, Roy & Vetterli)",
         _val(h.get("joint_effective_rank_lambda_entropy"), ".1f", h.get("joint_spectrum_message")),
         f"of d = {embed_dim}" if embed_dim else "", "exp(entropy of the covariance eigenvalues λ/Σλ)"),
        ("joint effective rank (σ-entropy)",
         _val(h.get("joint_effective_rank_sigma_entropy"), ".1f", see_above),
         f"of d = {embed_dim}" if embed_dim else "", "exp(entropy of the singular values σ/Σσ)"),
        ("joint collapse point (λ_k/λ_1 below threshold)",
         _val(h.get("joint_collapse_index"), ".0f", see_above),
         f"of d = {embed_dim}" if embed_dim else "", ""),
        ("conformity fit r, raw mean (image / text)",
         f"{_val(h.get('image_conformity_fit_raw_mean_r'), '.3f', h.get('image_conformity_fit_message'))} / "
         f"{_val(h.get('text_conformity_fit_raw_mean_r'), '.3f', h.get('text_conformity_fit_message'))}",
         "1 = conformity is a linear function of the cosine to the raw mean μ", ""),
        ("spread of the distance from the mean ‖x − μ‖, std/mean (image / text)",
         f"{_num(h.get('image_dist_to_mean_std_over_mean'))} / {_num(h.get('text_dist_to_mean_std_over_mean'))}",
         "small = thin shell (P2)", ""),
    ]
    return rows


def headline_block(h: dict, embed_dim: int | None) -> str:
    """"What this run shows": headline figures (view v_headline), each beside its chance level or
    reference (:func:`headline_rows`)."""
    rows = headline_rows(h, embed_dim)
    e = html.escape
    body = "".join(f"<tr><th>{e(a)}</th><td>{e(b)}</td><td class=\"ref\">{e(c)}</td><td class=\"ref\">{e(d)}</td></tr>"
                   for a, b, c, d in rows)
    return f'<div class="table-wrap"><table class="data headline" id="headline"><tbody>{body}</tbody></table></div>'


def run_page(data: dict[str, pl.DataFrame], run_id: str, paths: Paths) -> Page:
    f = {k: (v.filter(pl.col("run_id") == run_id) if "run_id" in v.columns else v) for k, v in data.items()}
    run = f["runs"].to_dicts()[0]
    f["counts"] = data["counts"].filter(pl.col("dataset_id") == run["dataset_id"]) if data["counts"].height else data["counts"]
    label = run["label"]
    page = Page(title=f"clipgeo report — {label}", provenance=_provenance(run, f["counts"], paths) + [("generated", generated_at())],
                meta={"kind": "run", "runs": run_id})
    head = f["headline"].to_dicts()
    page.add(Section(
        "What this run shows",
        "Headline figures of this run, each beside its chance level or reference value.",
        html_block=headline_block(head[0], run.get("embed_dim")) if head else "",
        missing=None if head else "no headline figures (the run has not been measured)",
        status=STATUS_OK if head else "not measured",
        views=("v_headline",), query=view_query("v_headline", [run_id]),
    ))
    page.add(reproduction.reproduction_section(f, run_id, run.get("model_name")))
    c = Ctx(f, [run_id], label, None, "container")
    for sec in core_sections(c) + geometry_sections(c) + topology_sections(c) + rejects_sections(f):
        page.add(sec)
    for sec in reproduction.estimator_sections(f, run_id):
        page.add(sec)
    sections = f["sections"]
    rows = sections.select("section", "status", "ran_on", "message", "seconds", "analysis_version").to_dicts()
    if sections.height:
        from clipgeo.stages.measure import all_sections

        done = set(sections["section"].to_list())
        rows += [{"section": s.name, "status": "not measured", "ran_on": None, "seconds": None, "analysis_version": None,
                  "message": f"not asked for yet: `m.compute(\"{s.name}\")` on a `clipgeo.measure(...)` result (or "
                             "reading one of its tables from `m.tables`), or `clipgeo analyse`, measures it"}
                 for s in all_sections() if s.name not in done]
    page.add(Section(
        "Measurement status",
        "What each measurement section did for this run: ok, skipped (not applicable, with the reason) or failed "
        "(with the error), and what it was computed on (every vector streamed, all of a small run, or a stated "
        "deterministic hash sample; table measure_samples); 'not measured': not asked for yet (clipgeo.measure "
        "leaves the costly sections for when they are read), with how to measure it. Sections that are not ok "
        "have no rows above.",
        table=rows if sections.height else None,
        missing=None if sections.height else "no measurement has been recorded for this run",
        status=STATUS_OK if sections.height else "not measured",
        views=("v_report_sections",), query=view_query("v_report_sections", [run_id]),
    ))
    return page


def compare_page(data: dict[str, pl.DataFrame], run_ids: list[str]) -> Page:
    runs = data["runs"]
    datasets = sorted(set(runs["dataset_id"].to_list()))
    page = Page(
        title=f"clipgeo comparison — {len(run_ids)} runs",
        provenance=[("runs", "; ".join(f"{r['run_id']}: {r['label']} (ckpt sha256 {(r['checkpoint_sha256'] or 'n/a')[:12]})"
                                       for r in runs.to_dicts())),
                    ("datasets", ", ".join(datasets)), ("analysis version", ANALYSIS_VERSION), ("generated", generated_at())],
        meta={"kind": "compare", "runs": ",".join(run_ids)},
    )
    head = data["headline"]
    page.add(Section(
        "Headline figures",
        "One row per run: the figures of each run page's \"What this run shows\" block, from the view v_headline "
        "(the one definition of the headline figures, also read by the end-of-run summary and the index page), "
        "each with its run's chance level or reference in brackets where it has one; every column of the view: "
        "the query below.",
        table=compare_headline(head, runs) if head.height else None,
        missing=None if head.height else "no measured runs",
        status=STATUS_OK if head.height else "not measured",
        views=("v_headline",), query=view_query("v_headline", run_ids),
    ))
    n = max(1, len(run_ids))
    c = Ctx(data, run_ids, "each run", "label", max(220, 1240 // n - 60))
    for sec in core_sections(c) + geometry_sections(c) + topology_sections(c) + rejects_sections(data):
        page.add(sec)
    return page


def compare_headline(head: pl.DataFrame, runs: pl.DataFrame) -> list[dict]:
    """The comparison page's headline table: one row per run, the columns named as on the run
    page (:func:`headline_rows`), a run-specific chance level or ``of d`` beside its value."""
    dims = dict(zip(runs["run_id"].to_list(), runs["embed_dim"].to_list())) if "embed_dim" in runs.columns else {}
    out = []
    for h in head.to_dicts():
        row = {"run": h["label"], "dataset": h.get("dataset_id") or ""}
        for name, value, ref, _ in headline_rows(h, dims.get(h["run_id"])):
            row[name] = f"{value} ({ref})" if ref.startswith(("chance", "of d")) else value
        out.append(row)
    return out


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


def _r1_short(h: dict, d: str) -> str:
    """recall@1, or 'optimistic – pessimistic' when exact ties exist (escaped HTML)."""
    r, p, n = h.get(f"{d}_r1"), h.get(f"{d}_r1_pessimistic"), h.get(f"{d}_n_tied_queries")
    if n and p is not None:
        return html.escape(f"{_pct(r)} – {_pct(p)}") + f' <span class="ref" title="{n} queries with exact ties: ties ' \
            'in favour – against">(ties)</span>'
    return html.escape(_pct(r))


def index_page(con, reports: Path, paths: Paths) -> Page:
    """``reports/index.html``: every dataset, run and comparison in the catalog, with headline
    figures, section status and links to the pages that exist."""
    e = html.escape
    head = paths.frame(catalog.query(con, "SELECT * FROM v_report_run_index ORDER BY dataset_id, label"))
    counts = paths.frame(catalog.query(con, "SELECT * FROM v_report_dataset_counts ORDER BY dataset_id"))
    page = Page(title="clipgeo reports", provenance=[("generated", generated_at()), ("analysis version", ANALYSIS_VERSION)],
                meta={"kind": "index"}, toc=False)

    def link(name: str, text: str) -> str:
        return f'<a href="{e(name)}">{e(text)}</a>' if (reports / name).exists() else e(text)

    ds_rows = "".join(
        f"<tr><td>{e(d['dataset_name'])}</td><td>{e(d['dataset_id'])}</td><td>{d['n_images_kept']}</td>"
        f"<td>{d['n_captions_kept']}</td><td>{d['n_images_dropped']}</td><td>{d['n_captions_dropped']}</td></tr>"
        for d in counts.to_dicts())
    page.add(Section("Datasets", "Kept and dropped inputs per dataset (view v_report_dataset_counts; the rejects of each "
                     "dataset are listed on its runs' pages).",
                     html_block='<div class="table-wrap"><table class="data" id="datasets-table"><thead><tr><th>dataset</th>'
                     "<th>id</th><th>images kept</th><th>captions kept</th><th>images dropped</th><th>captions dropped</th>"
                     f"</tr></thead><tbody>{ds_rows}</tbody></table></div>",
                     query='clipgeo sql "select * from v_report_dataset_counts"'))
    run_rows = []
    for h in head.to_dicts():
        page_name = f"run-{h['run_id']}.html"
        run_rows.append(
            f"<tr><td>{link(page_name, h['label'])}</td><td>{e(h['dataset_id'] or '')}</td>"
            f"<td>{e(h['run_status'])}</td><td>{_r1_short(h, 't2i')} <span class=\"ref\">(chance "
            f"{_pct(h['t2i_r1_chance'])})</span></td><td>{_r1_short(h, 'i2t')} <span class=\"ref\">(chance "
            f"{_pct(h['i2t_r1_chance'])})</span></td><td>{_num(h['gap'])}</td><td>{_pct(h['separability_accuracy'])}</td>"
            f"<td>{e(h['sections'])}</td></tr>")
    page.add(Section("Runs", "One row per run (view v_report_run_index: v_headline with the run's status and "
                     "sections): recall@1 beside chance (with exact ties: in favour – against), modality gap, "
                     "separability (chance 50%) and what the measurement sections did.",
                     html_block='<div class="table-wrap"><table class="data" id="runs-table"><thead><tr><th>run</th>'
                     "<th>dataset</th><th>status</th><th>T→I R@1</th><th>I→T R@1</th><th>gap</th><th>separability</th>"
                     f"<th>sections</th></tr></thead><tbody>{''.join(run_rows)}</tbody></table></div>",
                     query='clipgeo sql "select * from v_report_run_index"'))
    page.add(reproduction.index_section(con))
    labels = {h["run_id"]: h["label"] for h in head.to_dicts()}
    comp_rows = []
    for f in sorted(reports.glob("compare-*.html")):
        m = re.search(r'<meta name="clipgeo-runs" content="([^"]*)">', f.read_text(encoding="utf-8", errors="replace")[:4000])
        ids = html.unescape(m.group(1)).split(",") if m else []
        comp_rows.append(f"<tr><td>{link(f.name, f.stem)}</td><td>{e('; '.join(labels.get(i, i) for i in ids))}</td></tr>")
    if (traj := index_section(reports)) is not None:
        page.add(traj)
    page.add(Section("Comparisons", "Pages comparing runs side by side.",
                     html_block='<div class="table-wrap"><table class="data" id="compare-table"><thead><tr><th>page</th>'
                     f"<th>runs</th></tr></thead><tbody>{''.join(comp_rows)}</tbody></table></div>"
                     if comp_rows else "<p>No comparison yet (a report of two or more runs writes one).</p>"))
    return page


def write_reports(home: DataHome, run_ids: list[str], *, export: str | None = None, full_paths: bool = False) -> list[Path]:
    """Write ``reports/run-<id>.html`` for each run and, for 2+ runs, ``reports/compare-<hash>.html``,
    then regenerate ``reports/index.html`` (listed last in the returned paths).

    Paths are shareable unless ``full_paths``: inside the data home relative to it, outside
    it the file name and a content hash. With ``export="svg"`` or ``"png"``, also each chart
    as a file under ``reports/<page name>/``.
    """
    if not run_ids:
        return []
    paths_ = Paths(home.root, full=full_paths)
    with catalog.session(home, read_only=True) as con:
        use_current_views(con)
        data = _load(con, run_ids, paths_)
    found = set(data["runs"]["run_id"].to_list())
    unknown = [r for r in run_ids if r not in found]
    if unknown:
        raise KeyError(f"runs not in the catalog {home.catalog}: {', '.join(unknown)} (see `clipgeo runs`)")
    home.reports.mkdir(parents=True, exist_ok=True)
    pages = [(f"run-{r}", run_page(data, r, paths_)) for r in run_ids]
    if len(run_ids) > 1:
        digest = hashlib.sha1("|".join(sorted(run_ids)).encode()).hexdigest()[:8]
        pages.append((f"compare-{digest}", compare_page(data, run_ids)))
    out = [write_page(home.reports / f"{name}.html", page.render()) for name, page in pages]
    if export:
        for name, page in pages:
            export_charts(page, home.reports / name, export)
    out.append(write_index(home, paths_))
    return out


def write_index(home: DataHome, paths_: Paths | None = None) -> Path:
    """(Re)write ``reports/index.html`` from the catalog; returns its path."""
    home.reports.mkdir(parents=True, exist_ok=True)
    with catalog.session(home, read_only=True) as con:
        use_current_views(con)
        return write_page(home.reports / "index.html", index_page(con, home.reports, paths_ or Paths(home.root)).render())
