"""The "Reproduction" block (published values beside the run's own, view v_reference_comparison)
and the sections of the estimators of issue 25 (gap_estimators, intrinsic_dim,
intrinsic_dim_correlation, bootstrap_ci), for run pages and the index.

A row is a match only when the view says so (model, weights, dataset, split, protocol and
sample all agree); otherwise it names each condition that differs. A run whose architecture no
reference covers (the tiny default models) says "no reference applies".
"""

from __future__ import annotations

import html

import polars as pl

from dashboards.page import STATUS_OK, Section

#: Views the run pages load for these sections: key -> (view, order of rows).
VIEWS: dict[str, tuple[str, str]] = {
    "reference": ("v_reference_comparison", "run_id, matched DESC, metric, reference_id"),
    "gap_estimators": ("v_report_gap_estimators", "label"),
    "intrinsic_dim": ("v_report_intrinsic_dim", "label, scope DESC, cluster, modality, estimator"),
    "intrinsic_dim_corr": ("v_report_intrinsic_dim_correlation", "label, local_dimension"),
    "bootstrap": ("v_report_bootstrap", "label, metric"),
}


def _fmt(v, fmt: str = ".4f") -> str:
    return "—" if v is None else format(v, fmt)


def no_reference_text(model_name: str | None, refs: pl.DataFrame) -> str:
    archs = sorted(set(refs["reference_model"].drop_nulls().to_list())) if refs.height else []
    return (f"no reference applies: no published value in reference_values is for the architecture "
            f"{model_name or 'of this run'}" + (f" (the references cover {', '.join(archs)})" if archs else ""))


def reproduction_block(rows: pl.DataFrame, model_name: str | None) -> tuple[str, bool]:
    """(escaped HTML, whether any reference applies) for one run's v_reference_comparison rows."""
    e = html.escape
    same = rows.filter(pl.col("same_architecture")) if rows.height else rows
    if not same.height:
        return f'<p class="reproduction" id="reproduction-none">{e(no_reference_text(model_name, rows))}.</p>', False
    body = []
    for r in same.to_dicts():
        verdict = ("match" if r["matched"] else "no match: " + (r["differs_text"] or ""))
        src = f"{r['source_repo']} {r['source_file']}" + (f" @ {r['source_commit'][:7]}" if r.get("source_commit") else "")
        body.append(
            f'<tr class="{"matched" if r["matched"] else "differs"}"><td>{e(r["metric"])}</td>'
            f"<td>{e(_fmt(r['run_value']))}</td><td>{e(_fmt(r['reference_value']))}</td>"
            f"<td>{e(_fmt(r['difference'], '+.4f') if r['matched'] else '—')}</td>"
            f"<td>{e(r['reference_model'])} {e(r['reference_pretrained'] or '')}; {e(r['reference_dataset'])} "
            f"{e(r['reference_split'])}; {e(r['reference_protocol'])}</td><td>{e(verdict)}</td>"
            f'<td class="ref" title="{e(r.get("source_note") or "")}">{e(src)}</td></tr>')
    head = ("<thead><tr><th>metric</th><th>this run</th><th>published</th><th>difference</th><th>reference conditions"
            "</th><th>verdict</th><th>source</th></tr></thead>")
    return (f'<div class="table-wrap"><table class="data" id="reproduction">{head}<tbody>{"".join(body)}</tbody>'
            "</table></div>"), True


def reproduction_section(f: dict[str, pl.DataFrame], run_id: str, model_name: str | None) -> Section:
    rows = f["reference"].filter(pl.col("run_id") == run_id) if f["reference"].height else f["reference"]
    block, applies = reproduction_block(rows, model_name)
    return Section(
        "Reproduction: published values",
        "Published numbers (sql/reference/reference_values.csv, table reference_values) beside this run's own "
        "(view v_reference_comparison). A row is a match only when the model architecture, the weights (sha256 of the "
        "weight file where the reference names one, else the open_clip tag), the dataset, its split, the protocol "
        "(--protocol liang-gap / karpathy-5k) and the sample all agree; the difference is shown only then. Otherwise "
        "the row says which condition differs, and it is never a match.",
        html_block=block, status=STATUS_OK if applies else "no reference",
        views=("v_reference_comparison",),
        query=f'clipgeo sql "select * from v_reference_comparison where run_id = \'{run_id}\' and same_architecture"')


def estimator_sections(f: dict[str, pl.DataFrame], run_id: str) -> list[Section]:
    def sel(key: str) -> pl.DataFrame:
        df = f[key]
        return df.filter(pl.col("run_id") == run_id).drop("run_id", "label") if df.height else df

    def sec(title: str, caption: str, key: str, what: str) -> Section:
        df = sel(key)
        return Section(title, caption, table=df.to_dicts() if df.height else None,
                       missing=None if df.height else f"no {what} stored for this run (see Measurement status)",
                       status=STATUS_OK if df.height else "empty", views=(VIEWS[key][0],),
                       query=f'clipgeo sql "select * from {VIEWS[key][0]} where run_id = \'{run_id}\'"')
    return [
        sec("Relative modality gap (RMG) and L2I",
            "Schrodi et al. (lmb-freiburg/two-effects-one-trigger, analysis/gap_precompute.py): RMG = m / (m + (d_I + d_T)/2), "
            "m = (1 − mean paired cos)/2, d_I, d_T = (1 − mean within-modality cos)/2; L2I = mean ‖x̂_I − x̂_T‖ over pairs "
            "(= modality_gap.paired_distance). Within-modality mean cosines exact from the unit sums (Liang et al. Fig. 2a). "
            "On the run's sample (section gap_estimators).", "gap_estimators", "gap estimators"),
        sec("Intrinsic dimension (TwoNN, Levina–Bickel MLE)",
            "Global (cluster −1, first pairs of the sample) and per HDBSCAN cluster (joint members): TwoNN (Facco et al. "
            "2017, 10% largest ratios discarded) and the Levina–Bickel MLE (k = 20, harmonic pooling), clipgeo's "
            "implementation (dimension) beside scikit-dimension 0.5.0 on the same points (library_dimension, global rows).",
            "intrinsic_dim", "intrinsic-dimension rows"),
        sec("Local dimension and per-cluster top-1: three estimators (Fig. 15)",
            "Correlation across clusters between the cluster's top-1 retrieval and its local dimension: the spectrum-based "
            "area under the log singular-value curve (today's Fig. 15 measure, joint scope) beside TwoNN and MLE.",
            "intrinsic_dim_corr", "correlation rows"),
        sec("Bootstrap confidence intervals of the headline figures",
            "Resample count, seed, what was resampled and the interval's method are stated per row (clipgeo.core.bootstrap).",
            "bootstrap", "bootstrap intervals"),
    ]


def index_rows(con) -> list[dict]:
    """One row per run for the index: matched references, or why none applies / what differs."""
    from clipgeo.store import catalog

    df = catalog.query(con, "SELECT run_id, label, model_name, bool_or(same_architecture) AS applies,"
                            " count(*) FILTER (WHERE matched) AS n_matched,"
                            " count(*) FILTER (WHERE same_architecture) AS n_same,"
                            " string_agg(DISTINCT CASE WHEN same_architecture AND NOT matched THEN differs_text END, ' | ')"
                            " AS differs FROM v_reference_comparison GROUP BY ALL ORDER BY label")
    refs = catalog.query(con, "SELECT model_name AS reference_model FROM reference_values")
    out = []
    for r in df.to_dicts():
        if not r["applies"]:
            text = no_reference_text(r["model_name"], refs)
        elif r["n_matched"]:
            text = f"{r['n_matched']} of {r['n_same']} references of {r['model_name']} match"
        else:
            text = f"no match among {r['n_same']} references of {r['model_name']}: {r['differs']}"
        out.append({"run": r["label"], "reproduction": text})
    return out


def index_section(con) -> Section:
    rows = index_rows(con)
    return Section("Reproduction", "Per run, whether a published value applies and matches (view v_reference_comparison; "
                   "details on the run's page).", table=rows or None,
                   missing=None if rows else "no runs", status=STATUS_OK if rows else "empty",
                   views=("v_reference_comparison",), query='clipgeo sql "select * from v_reference_comparison"')
