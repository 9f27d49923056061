"""Altair chart builders shared by the reports. They take stored rows (Polars frames read
from the catalog) and never compute metrics."""

from __future__ import annotations

import altair as alt
import polars as pl

MODALITY_COLORS = alt.Scale(domain=["image", "text"], range=["#1f77b4", "#ff7f0e"])
DIRECTION_LABELS = {"text_to_image": "text → image", "image_to_text": "image → text"}


def _with_labels(df: pl.DataFrame) -> pl.DataFrame:
    if "direction" in df.columns:
        df = df.with_columns(pl.col("direction").replace(DIRECTION_LABELS).alias("direction"))
    return df


def retrieval_bars(df: pl.DataFrame, *, column: str | None = None) -> alt.TopLevelMixin:
    """recall@k bars per direction with the chance level as a tick (Table II)."""
    data = _with_labels(df).with_columns(pl.format("R@{}", pl.col("k")).alias("metric"))
    base = alt.Chart(data)
    bars = base.mark_bar().encode(
        x=alt.X("metric:N", title=None, sort=["R@1", "R@5", "R@10"]),
        xOffset="direction:N",
        y=alt.Y("recall:Q", scale=alt.Scale(domain=[0, 1]), title="recall@k"),
        color=alt.Color("direction:N", title="direction"),
        tooltip=["label:N", "direction:N", "k:Q", alt.Tooltip("recall:Q", format=".3f"),
                 alt.Tooltip("chance:Q", format=".4f"), "n_queries:Q", "n_candidates:Q"],
    )
    ticks = base.mark_tick(color="black", thickness=2, size=18).encode(
        x=alt.X("metric:N", sort=["R@1", "R@5", "R@10"]), xOffset="direction:N", y="chance:Q",
        tooltip=[alt.Tooltip("chance:Q", format=".4f", title="chance")],
    )
    layered = alt.layer(bars, ticks).properties(width=260, height=220)
    if column:
        return layered.facet(column=alt.Column(f"{column}:N", title=None, header=alt.Header(labelLimit=400)))
    return layered


def recall_curve(df: pl.DataFrame, *, color: str = "direction") -> alt.TopLevelMixin:
    """Cumulative recall@k for k = 1..K from per-query ranks (rows: direction, k, recall[, label])."""
    data = _with_labels(df)
    return (
        alt.Chart(data)
        .mark_line(point=False)
        .encode(
            x=alt.X("k:Q", scale=alt.Scale(type="log"), title="k"),
            y=alt.Y("recall:Q", scale=alt.Scale(domain=[0, 1]), title="recall@k"),
            color=alt.Color(f"{color}:N"),
            strokeDash="direction:N" if color != "direction" else alt.value([1, 0]),
            tooltip=["label:N", "direction:N", "k:Q", alt.Tooltip("recall:Q", format=".3f")],
        )
        .properties(width=420, height=240)
    )


def separability_bars(df: pl.DataFrame, *, column: str | None = None) -> alt.TopLevelMixin:
    """Held-out accuracy / precision / recall of the linear SVM on modality labels (Table I)."""
    long = df.unpivot(
        index=[c for c in df.columns if c not in ("accuracy", "precision", "recall")],
        on=["accuracy", "precision", "recall"], variable_name="measure", value_name="value",
    ).with_columns(pl.format("{} / {}", pl.col("vectors"), pl.col("features")).alias("setting"))
    chart = (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("setting:N", title=None),
            xOffset="measure:N",
            y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1]), title="held-out score"),
            color=alt.Color("measure:N"),
            tooltip=["label:N", "setting:N", "measure:N", alt.Tooltip("value:Q", format=".3f"), "n_train:Q", "n_test:Q"],
        )
        .properties(width=260, height=220)
    )
    if column:
        return chart.facet(column=alt.Column(f"{column}:N", title=None, header=alt.Header(labelLimit=400)))
    return chart


def pca_scatter(df: pl.DataFrame, *, column: str | None = None) -> alt.TopLevelMixin:
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
        .properties(width=320, height=300)
    )
    if column:
        return chart.facet(column=alt.Column(f"{column}:N", title=None, header=alt.Header(labelLimit=400)))
    return chart
