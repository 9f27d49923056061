"""Altair chart builders shared by the reports. Each takes the rows of one view (Polars
frames read from the catalog, unchanged) and never computes metrics: reshaping (fold,
filter) is done by Vega-Lite transforms, so a chart's data is exactly its view's rows."""

from __future__ import annotations

import altair as alt
import polars as pl

# Point counts are bounded upstream (the views sample above report_point_budget() per run and modality,
# histograms are pre-aggregated), so Altair's own 5,000-row guard would only refuse a
# comparison of several runs.
alt.data_transformers.disable_max_rows()

MODALITY_COLORS = alt.Scale(domain=["image", "text"], range=["#1f77b4", "#ff7f0e"])
Width = int | str  # pixels, or "container" (fills the page; not for faceted charts)


def _log_floor(df: pl.DataFrame, cols: tuple[str, ...]) -> float:
    """A power of ten below every positive value of ``cols`` (the lower end of a log axis)."""
    import math

    vals = [v for c in cols if c in df.columns for v in df[c].drop_nulls().to_list() if v and v > 0]
    return 10.0 ** math.floor(math.log10(min(vals) / 2)) if vals else 1e-4


def retrieval_bars(df: pl.DataFrame, *, column: str | None = None, width: Width = "container") -> alt.TopLevelMixin:
    """recall@k bars per direction on a log axis with the chance level as a tick (Table II):
    results near chance stay readable; a zero recall shows as no bar."""
    base = alt.Chart(df)
    y_scale = alt.Scale(type="log", domainMin=_log_floor(df, ("recall", "chance")), domainMax=1, clamp=True)
    bars = base.mark_bar().encode(
        x=alt.X("metric:N", title=None, sort=["R@1", "R@5", "R@10"]),
        xOffset="direction_label:N",
        y=alt.Y("recall:Q", scale=y_scale, title="recall@k (log)"),
        color=alt.Color("direction_label:N", title="direction"),
        tooltip=["label:N", "direction_label:N", "k:Q", alt.Tooltip("recall:Q", format=".4f"),
                 alt.Tooltip("recall_pessimistic:Q", format=".4f", title="recall, ties against"),
                 alt.Tooltip("n_tied_queries:Q", title="queries with exact ties"),
                 alt.Tooltip("chance:Q", format=".4f"), alt.Tooltip("recall_over_chance:Q", format=".1f", title="× chance"),
                 "n_queries:Q", "n_candidates:Q"],
    )
    ticks = base.mark_tick(color="black", thickness=2, size=18).encode(
        x=alt.X("metric:N", sort=["R@1", "R@5", "R@10"]), xOffset="direction_label:N", y=alt.Y("chance:Q", scale=y_scale),
        tooltip=[alt.Tooltip("chance:Q", format=".4f", title="chance")],
    )
    layered = alt.layer(bars, ticks).properties(width=width, height=240)
    return _facet(layered, column)


def recall_curve(df: pl.DataFrame, *, color: str = "direction_label", width: Width = "container") -> alt.TopLevelMixin:
    """Cumulative recall@k for k = 1..K from per-query ranks, log-log, with the chance level dotted."""
    y_scale = alt.Scale(type="log", domainMin=_log_floor(df, ("recall", "chance")), domainMax=1, clamp=True)
    base = alt.Chart(df)
    enc = dict(x=alt.X("k:Q", scale=alt.Scale(type="log"), title="k"), color=alt.Color(f"{color}:N", title="run" if color == "label" else "direction"),
               detail="direction_label:N")
    line = base.mark_line(point=True).encode(
        y=alt.Y("recall:Q", scale=y_scale, title="recall@k (log)"),
        strokeDash="direction_label:N" if color != "direction_label" else alt.value([1, 0]),
        tooltip=["label:N", "direction_label:N", "k:Q", alt.Tooltip("recall:Q", format=".4f"),
                 alt.Tooltip("recall_pessimistic:Q", format=".4f", title="recall, ties against"),
                 alt.Tooltip("chance:Q", format=".4f")], **enc,
    )
    chance = base.mark_line(strokeDash=[2, 2], opacity=0.7).encode(
        y=alt.Y("chance:Q", scale=y_scale), tooltip=["direction_label:N", "k:Q", alt.Tooltip("chance:Q", format=".4f")],
        **enc,
    )
    return alt.layer(line, chance).properties(width=width, height=260)


def separability_bars(df: pl.DataFrame, *, column: str | None = None, width: Width = "container") -> alt.TopLevelMixin:
    """Held-out accuracy / precision / recall of the linear SVM on modality labels (Table I)."""
    chart = (
        alt.Chart(df)
        .transform_fold(["accuracy", "precision", "recall"], as_=["measure", "value"])
        .mark_bar()
        .encode(
            x=alt.X("setting:N", title=None),
            xOffset="measure:N",
            y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1]), title="held-out score"),
            color=alt.Color("measure:N"),
            tooltip=["label:N", "setting:N", "measure:N", alt.Tooltip("value:Q", format=".3f"), "n_train:Q", "n_test:Q"],
        )
        .properties(width=width, height=220)
    )
    return _facet(chart, column)


def _facet(chart: alt.TopLevelMixin, column: str | None) -> alt.TopLevelMixin:
    if column:
        return chart.facet(column=alt.Column(f"{column}:N", title=None, header=alt.Header(labelLimit=400)))
    return chart


def pca_scatter(df: pl.DataFrame, *, column: str | None = None, width: Width = "container") -> alt.TopLevelMixin:
    """Top-2 principal components of the normalised vectors, coloured by modality (Fig. 2)."""
    sel = alt.selection_point(fields=["modality"], bind="legend")
    chart = (
        alt.Chart(df)
        .mark_circle(size=12)
        .encode(
            x=alt.X("pc1:Q", title="PC 1"),
            y=alt.Y("pc2:Q", title="PC 2"),
            color=alt.Color("modality:N", scale=MODALITY_COLORS),
            opacity=alt.condition(sel, alt.value(0.6), alt.value(0.05)),
            tooltip=["label:N", "modality:N", "item_id:N", alt.Tooltip("pc1:Q", format=".3f"), alt.Tooltip("pc2:Q", format=".3f")],
        )
        .add_params(sel)
        .properties(width=width, height=320)
    )
    return _facet(chart, column)


def histogram_bars(df: pl.DataFrame, *, x_title: str, column: str | None = None, width: Width = "container") -> alt.TopLevelMixin:
    """Stored histogram bins (lo, hi, density) per modality, overlaid (P2 shell, conformity)."""
    chart = (
        alt.Chart(df)
        .mark_bar(opacity=0.55, binSpacing=0)
        .encode(
            x=alt.X("lo:Q", title=x_title, bin="binned"),
            x2="hi:Q",
            y=alt.Y("density:Q", title="density", stack=None),
            color=alt.Color("modality:N", scale=MODALITY_COLORS),
            tooltip=["label:N", "modality:N", alt.Tooltip("lo:Q", format=".3f"), alt.Tooltip("hi:Q", format=".3f"),
                     "count:Q", alt.Tooltip("density:Q", format=".3f")],
        )
        .properties(width=width, height=220)
    )
    return _facet(chart, column)


def spectrum_lines(df: pl.DataFrame, *, y: str = "semi_axis", y_title: str = "semi-axis √λ", column: str | None = None,
                   color: str = "modality", width: Width = "container") -> alt.TopLevelMixin:
    """A spectrum (one value per axis index) on a log scale, per modality (P3)."""
    enc_color = alt.Color(f"{color}:N", scale=MODALITY_COLORS) if color == "modality" else alt.Color(f"{color}:N")
    chart = (
        alt.Chart(df)
        .mark_line(point=alt.OverlayMarkDef(size=10))
        .encode(
            x=alt.X("axis:Q", title="principal axis (sorted)"),
            y=alt.Y(f"{y}:Q", scale=alt.Scale(type="log"), title=y_title),
            color=enc_color,
            tooltip=["label:N", f"{color}:N", "axis:Q", alt.Tooltip(f"{y}:Q", format=".4g")],
        )
        .properties(width=width, height=240)
    )
    return _facet(chart, column)


def tilt_points(df: pl.DataFrame, *, column: str | None = None, width: Width = "container") -> alt.TopLevelMixin:
    """Largest absolute coordinate of each top principal axis (1 = axis-aligned; rule at 1/√d) (P4)."""
    base = alt.Chart(df)
    pts = base.mark_line(point=True).encode(
        x=alt.X("axis:Q", title="principal axis"),
        y=alt.Y("max_abs_coord:Q", scale=alt.Scale(domain=[0, 1]), title="max |coordinate|"),
        color=alt.Color("modality:N", scale=MODALITY_COLORS),
        tooltip=["label:N", "modality:N", "axis:Q", alt.Tooltip("max_abs_coord:Q", format=".3f"), "argmax_coord:Q"],
    )
    rule = base.mark_rule(strokeDash=[4, 3], color="gray").encode(y="fully_tilted:Q")
    return _facet(alt.layer(pts, rule).properties(width=width, height=220), column)


POINT_TOOLTIP = ["label:N", "modality:N", "item_id:N", "caption:N", "image_ref:N",
                 alt.Tooltip("conformity:Q", format=".4f"),
                 alt.Tooltip("cos_to_raw_mean:Q", format=".4f", title="cos to the raw mean μ"),
                 alt.Tooltip("cos_to_unit_mean:Q", format=".4f", title="cos to the unit-vector mean m̂"),
                 alt.Tooltip("image:N", title="image")]
# A thumbnail in the tooltip (vega-tooltip shows a field titled "image" as a picture) when the
# page is opened beside its data home: a relative link, nothing inlined. Paths reduced to a
# name and hash (outside the home) and text points have none: the empty string, which vega-tooltip
# skips (null would become the text "null" and an <img src=".../null">, a failed request per hover).
THUMBNAIL = ("isValid(datum.image_ref) && !test(/ #/, datum.image_ref) ? "
             "(substring(datum.image_ref, 0, 1) == '/' ? 'file://' + datum.image_ref : '../' + datum.image_ref) : ''")


CONFORMITY_MEANS = ["raw mean", "unit mean"]  # the values of v_report_conformity_fit.mean


def conformity_scatter(points: pl.DataFrame, fits: pl.DataFrame, *, column: str | None = None,
                       width: Width = "container") -> alt.TopLevelMixin:
    """Conformity C(v) against the cosine to the modality's mean per sample (rows of
    v_report_points), with the stored fit C ≈ a·cos + b (rows of v_report_conformity_fit).
    A radio button picks the mean: the raw mean μ (the Double-Ellipsoid figure, default) or the
    mean of the unit vectors m̂ (the DE-CLIP notebook's relation, exactly affine)."""
    sel = alt.selection_point(fields=["modality"], bind="legend")
    mean = alt.param(name="conformity_mean", value=CONFORMITY_MEANS[0],
                     bind=alt.binding_radio(options=CONFORMITY_MEANS, name="cosine to the "))
    cos = ("conformity_mean == 'unit mean' ? datum.cos_to_unit_mean : datum.cos_to_raw_mean")

    def panel(value=None, first=True):
        p, f = alt.Chart(points).transform_calculate(image=THUMBNAIL, cos=cos), alt.Chart(fits)
        if value is not None:
            p, f = p.transform_filter(alt.datum.label == value), f.transform_filter(alt.datum.label == value)
        scatter = p.transform_filter("isValid(datum.conformity) && isValid(datum.cos)").mark_circle(size=10).encode(
            x=alt.X("cos:Q", title="cos(v, μ) or cos(v, m̂): see the radio button",
                    scale=alt.Scale(zero=False)),
            y=alt.Y("conformity:Q", title="conformity C(v)", scale=alt.Scale(zero=False)),
            color=alt.Color("modality:N", scale=MODALITY_COLORS),
            opacity=alt.condition(sel, alt.value(0.5), alt.value(0.05)),
            tooltip=POINT_TOOLTIP,
        )
        if first:  # one legend selection for every panel
            scatter = scatter.add_params(sel)
        fit = f.transform_filter("datum.mean == conformity_mean").mark_line(strokeDash=[5, 3]).encode(
            x="x:Q", y="y:Q", color=alt.Color("modality:N", scale=MODALITY_COLORS), detail="modality:N",
            tooltip=["label:N", "modality:N", "mean:N", alt.Tooltip("a:Q", format=".4f"), alt.Tooltip("b:Q", format=".4f"),
                     alt.Tooltip("r:Q", format=".4f", title="Pearson r"), alt.Tooltip("n:Q", title="points in the fit")],
        )
        return alt.layer(scatter, fit)

    if column:  # layers with different data cannot be faceted: one panel per value, shared scales
        panels = [panel(v, i == 0).properties(title=str(v), width=width, height=280)
                  for i, v in enumerate(points[column].unique(maintain_order=True).to_list())]
        return alt.hconcat(*panels).resolve_scale(x="shared", y="shared").add_params(mean)
    return panel().properties(width=width, height=300).add_params(mean)


SHIFT_MEASURES = ["alignment", "uniformity", "infonce", "text_to_image_top1", "image_to_text_top1"]


def shift_curves(df: pl.DataFrame, *, color: str | None = None) -> alt.TopLevelMixin:
    """Origin shift: each measure against α (x ↦ x − α μ, re-normalised); α = 0 marked. The fold
    into (measure, value) is a transform of the facet itself, so each panel is one measure."""
    base = alt.Chart()
    enc = dict(
        x=alt.X("alpha:Q", title="α (shift by −α·μ)"),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
        tooltip=["label:N", "measure:N", alt.Tooltip("alpha:Q", format=".2f"), alt.Tooltip("value:Q", format=".4f")],
    )
    if color:
        enc["color"] = alt.Color(f"{color}:N")
    line = base.mark_line(point=True).encode(**enc)
    zero = base.transform_filter("datum.alpha == 0").mark_rule(color="gray", strokeDash=[3, 3]).encode(x="alpha:Q")
    return (
        alt.layer(line, zero)
        .properties(width=190, height=160)
        .facet(facet=alt.Facet("measure:N", title=None, sort=SHIFT_MEASURES), columns=5, data=df)
        .transform_fold(SHIFT_MEASURES, as_=["measure", "value"])
        .resolve_scale(y="independent")
    )


def density_lines(df: pl.DataFrame, *, x: str, x_title: str, color: str, column: str | None = None,
                  width: Width = "container") -> alt.TopLevelMixin:
    """Stored histogram densities as lines (Fig. 1 nearest reference, Fig. 3 cosine populations)."""
    chart = (
        alt.Chart(df)
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X(f"{x}:Q", title=x_title),
            y=alt.Y("density:Q", title="density"),
            color=alt.Color(f"{color}:N", title="run" if color == "label" else "direction"),
            tooltip=["label:N", f"{color}:N", alt.Tooltip(f"{x}:Q", format=".3f"), alt.Tooltip("density:Q", format=".3f")],
        )
        .properties(width=width, height=240)
    )
    return _facet(chart, column)


def umap_linked(df: pl.DataFrame) -> alt.TopLevelMixin:
    """UMAP layout beside the conformity plot of the same samples, linked by a brush (Figs. 4, 5, 7).
    Reads the rows of v_report_points (the same rows as the conformity plot and the cluster map)."""
    brush = alt.selection_interval(encodings=["x", "y"])
    legend = alt.selection_point(fields=["modality"], bind="legend")
    base = alt.Chart(df).transform_filter("isValid(datum.x2d)").transform_calculate(image=THUMBNAIL)
    color = alt.condition(brush, alt.Color("modality:N", scale=MODALITY_COLORS), alt.value("lightgray"))
    opacity = alt.condition(legend, alt.value(0.6), alt.value(0.03))
    left = base.mark_circle(size=9).encode(
        x=alt.X("x2d:Q", title="UMAP longitude (°, rotated)"), y=alt.Y("y2d:Q", title="UMAP latitude (°)"),
        color=color, opacity=opacity, tooltip=POINT_TOOLTIP,
    ).add_params(brush, legend).properties(width=640, height=400, title="UMAP (haversine), equirectangular")
    right = base.mark_circle(size=9).encode(
        x=alt.X("cos_to_raw_mean:Q", title="cos(v, μ): cosine to the raw mean of its modality", scale=alt.Scale(zero=False)),
        y=alt.Y("conformity:Q", title="conformity C(v)", scale=alt.Scale(zero=False)),
        color=color, opacity=opacity, tooltip=POINT_TOOLTIP,
    ).properties(width=480, height=400, title="conformity (brush the UMAP to select)")
    return alt.hconcat(left, right)


def umap_scatter(df: pl.DataFrame, *, color: str = "modality", column: str | None = None,
                 width: Width = "container") -> alt.TopLevelMixin:
    """UMAP layout (rows of v_report_points that have a position) coloured by modality or by
    cluster group (at most 11 legend entries: the largest clusters, 'other', 'noise')."""
    enc_color = alt.Color("modality:N", scale=MODALITY_COLORS) if color == "modality" else alt.Color(
        f"{color}:N", legend=alt.Legend(symbolLimit=12, columns=1))
    chart = (
        alt.Chart(df)
        .transform_filter("isValid(datum.x2d)")
        .mark_circle(size=8, opacity=0.6)
        .encode(x=alt.X("x2d:Q", title="longitude (°)"), y=alt.Y("y2d:Q", title="latitude (°)"), color=enc_color,
                tooltip=["label:N", "modality:N", "item_id:N", "cluster:N", "caption:N"])
        .properties(width=width, height=360)
    )
    return _facet(chart, column)


def paired_line_chart(df: pl.DataFrame, *, column: str | None = None, width: Width = "container") -> alt.TopLevelMixin:
    """Each pair's image and caption joined by a line in a plane (Figs. 6, 8)."""
    base = alt.Chart(df)
    lines = base.mark_rule(opacity=0.25, strokeWidth=0.6, color="gray").encode(
        x=alt.X("image_x:Q", title="plane axis 1"), y=alt.Y("image_y:Q", title="plane axis 2"), x2="text_x:Q", y2="text_y:Q",
        tooltip=["label:N", "pair_id:Q", alt.Tooltip("cosine:Q", format=".3f"), alt.Tooltip("length:Q", format=".3f")],
    )
    img = base.mark_circle(size=9, color=MODALITY_COLORS.range[0]).encode(x="image_x:Q", y="image_y:Q")
    txt = base.mark_circle(size=9, color=MODALITY_COLORS.range[1]).encode(x="text_x:Q", y="text_y:Q")
    return _facet(alt.layer(lines, img, txt).properties(width=width, height=300), column)


def eigenvalue_curves(df: pl.DataFrame, *, color: str = "scope", column: str | None = None,
                      width: Width = "container") -> alt.TopLevelMixin:
    """The paper's spectrum (Figs. 10–12): log10 λ_k/λ_1 of the covariance eigenvalues against
    the index k (rows of v_report_spectra; λ ∝ σ², so this spans twice the decades of σ_k/σ_1)."""
    chart = (
        alt.Chart(df)
        .mark_line()
        .encode(
            x=alt.X("index:Q", title="index k"),
            y=alt.Y("log10_eigenvalue_rel:Q", title="log10 λ_k / λ_1 (covariance eigenvalues)"),
            color=alt.Color(f"{color}:N"),
            detail=f"{color}:N",
            tooltip=["label:N", f"{color}:N", "index:Q", alt.Tooltip("eigenvalue_rel:Q", format=".3g", title="λ_k / λ_1"),
                     alt.Tooltip("log10_eigenvalue_rel:Q", format=".2f", title="log10 λ_k / λ_1"),
                     alt.Tooltip("sigma_rel:Q", format=".3g", title="σ_k / σ_1")],
        )
        .properties(width=width, height=240)
    )
    return _facet(chart, column)


def cluster_spectrum_curves(df: pl.DataFrame, *, column: str | None = None,
                            width: Width = "container") -> alt.TopLevelMixin:
    """Fig. 14: each cluster's covariance eigenvalues, log10 λ_k/λ_1 against k / number of values
    (rows of v_report_cluster_spectra: the mean over equal-size subsamples), the same quantity
    as Figs. 10–12; colour: a scale over the cluster number (any number of clusters)."""
    chart = (
        alt.Chart(df)
        .mark_line()
        .encode(
            x=alt.X("index_frac:Q", title="k / number of values"),
            y=alt.Y("log10_eigenvalue_rel:Q", title="log10 λ_k / λ_1 (covariance eigenvalues)"),
            color=alt.Color("cluster:Q", scale=alt.Scale(scheme="viridis"), title="cluster"),
            detail="cluster:N",
            tooltip=["label:N", "cluster:N", "index:Q", alt.Tooltip("eigenvalue_rel:Q", format=".3g", title="λ_k / λ_1"),
                     alt.Tooltip("log10_eigenvalue_rel:Q", format=".2f", title="log10 λ_k / λ_1"),
                     alt.Tooltip("sigma_rel:Q", format=".3g", title="σ_k / σ_1"),
                     alt.Tooltip("sample_size:Q", title="subsample size m")],
        )
        .properties(width=width, height=240)
    )
    return _facet(chart, column)


#: What Fig. 15 draws: clusters whose local dimension and accuracy are both defined.
LOCALDIM_DRAWN = "isValid(datum.auc_joint) && isFinite(datum.auc_joint) && isValid(datum.top1)"


def localdim_vs_accuracy(df: pl.DataFrame, *, column: str | None = None, width: Width = "container") -> alt.TopLevelMixin:
    """Per cluster whose local dimension is defined (:data:`LOCALDIM_DRAWN`): local dimension (AUC
    of the log spectrum) against top-1 retrieval (Fig. 15)."""
    chart = (
        alt.Chart(df)
        .transform_filter(LOCALDIM_DRAWN)
        .mark_circle()
        .encode(
            x=alt.X("auc_joint:Q", title="local dimension (mean log10 σ_k/σ_1 = ½ mean log10 λ_k/λ_1, size-matched)",
                    scale=alt.Scale(zero=False)),
            y=alt.Y("top1:Q", title="top-1 retrieval in cluster", scale=alt.Scale(domain=[0, 1])),
            size=alt.Size("n_points:Q", title="points"),
            tooltip=["label:N", "cluster:N", "n_points:Q", alt.Tooltip("auc_joint:Q", format=".3f"),
                     alt.Tooltip("top1:Q", format=".3f"), "status:N"],
        )
        .properties(width=width, height=260)
    )
    return _facet(chart, column)


def umap_grid_chart(df: pl.DataFrame) -> alt.TopLevelMixin:
    """The UMAP hyperparameter grid (Figs. 16–17): rows n_neighbors, columns min_dist."""
    return (
        alt.Chart(df)
        .mark_circle(size=4, opacity=0.5)
        .encode(x=alt.X("x2d:Q", title=None, axis=None), y=alt.Y("y2d:Q", title=None, axis=None),
                color=alt.Color("modality:N", scale=MODALITY_COLORS))
        .properties(width=200, height=150)
        .facet(row=alt.Row("n_neighbors:O"), column=alt.Column("min_dist:O"))
    )
