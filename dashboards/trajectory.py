"""``reports/trajectory.html``: how the geometry forms while a model trains.

Each headline figure of ``v_headline`` against the training step, one line per training (the
view ``v_trajectory``: one row per training x checkpoint, v_headline's columns joined, never
redefined). Several trainings (the ablation's objectives, or any folders followed with
``clipgeo track``) are drawn together. Offline like every report (Vega inlined once by
:class:`dashboards.page.Page`); the chart's data is exactly the view's rows, folded by a
Vega-Lite transform.
"""

from __future__ import annotations

import html
from pathlib import Path

import altair as alt
import polars as pl

from clipgeo.core.config import ANALYSIS_VERSION, DataHome
from clipgeo.store import catalog
from dashboards.output import generated_at, use_current_views, write_page
from dashboards.page import STATUS_OK, Page, Section

PAGE = "trajectory.html"

#: (v_headline column, title) of each figure drawn against the step.
METRICS: tuple[tuple[str, str], ...] = (
    ("gap", "modality gap"),
    ("t2i_r1", "text→image recall@1"),
    ("i2t_r1", "image→text recall@1"),
    ("joint_effective_rank_lambda_entropy", "effective rank (λ entropy)"),
    ("joint_effective_rank_sigma_entropy", "effective rank (σ entropy)"),
    ("joint_collapse_index", "collapse index"),
    ("image_conformity_fit_raw_mean_r", "conformity fit r (image)"),
    ("text_conformity_fit_raw_mean_r", "conformity fit r (text)"),
    ("separability_accuracy", "separability accuracy"),
    ("mixing_ratio_layout", "mixing ratio (layout)"),
)

_TABLE_COLS = ("training_label", "step", "epoch", "checkpoint_name", "measure", "run_id", *(m for m, _ in METRICS))


def _label_expr() -> str:
    expr = "datum.value"
    for col, title in reversed(METRICS):
        expr = f"datum.value === '{col}' ? '{title}' : ({expr})"
    return expr


def trajectory_chart(df: pl.DataFrame) -> alt.TopLevelMixin:
    """Each metric of :data:`METRICS` against the step (the epoch where no step is recorded),
    one line per training, points filled on fully measured checkpoints."""
    cols = [m for m, _ in METRICS]
    base = alt.Chart()
    enc = dict(
        x=alt.X("position:Q", title="step (epoch where the trainer records no step)"),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
        color=alt.Color("training_label:N", title="training"),
    )
    line = base.mark_line().encode(**enc, detail="training_id:N")
    points = base.mark_point(size=50, filled=True).encode(
        **enc,
        shape=alt.Shape("measure:N", title="measured", scale=alt.Scale(domain=["light", "full"],
                                                                         range=["circle", "diamond"])),
        tooltip=["training_label:N", "step:Q", "epoch:Q", "checkpoint_name:N", "measure:N", "run_id:N",
                 alt.Tooltip("metric:N"), alt.Tooltip("value:Q", format=".4f")],
    )
    return (
        alt.layer(line, points)
        .properties(width=300, height=170)
        .facet(facet=alt.Facet("metric:N", sort=cols, title=None, header=alt.Header(labelExpr=_label_expr())),
               columns=3, data=df)
        .transform_fold(cols, as_=["metric", "value"])
        .transform_filter("isValid(datum.value) && isFinite(datum.value)")
        .transform_calculate(position="datum.step != null ? datum.step : datum.epoch")
        .resolve_scale(y="independent")
    )


def trajectory_page(con) -> Page:
    """The page from the catalog (``v_trajectory`` and ``trainings``)."""
    df = catalog.query(con, "SELECT * FROM v_trajectory ORDER BY training_label, coalesce(step, epoch), run_id")
    tr = catalog.query(
        con,
        "SELECT t.*, count(*) FILTER (WHERE tc.status = 'measured') AS n_measured,"
        " count(*) FILTER (WHERE tc.measure = 'full' AND tc.status = 'measured') AS n_full,"
        " count(*) FILTER (WHERE tc.status = 'rejected') AS n_rejected"
        " FROM trainings t LEFT JOIN training_checkpoints tc USING (training_id)"
        " GROUP BY ALL ORDER BY t.label")
    prov = [(f"training {r['label']}",
             f"{r['training_id']}: folder {Path(r['checkpoint_dir']).name}, model {r['model_name']}, evaluation set "
             f"{r['dataset_id']}; {r['n_measured']} checkpoints measured ({r['n_full']} with the full suite), "
             f"{r['n_rejected']} rejected")
            for r in tr.to_dicts()]
    prov += [("analysis version", ANALYSIS_VERSION), ("generated", generated_at())]
    page = Page(title=f"clipgeo trajectories — {tr.height} trainings", provenance=prov,
                meta={"kind": "trajectory", "trainings": ",".join(tr["training_id"].to_list()) if tr.height else ""})
    n = df["training_id"].n_unique() if df.height else 0
    page.add(Section(
        "Headline figures against the training step",
        "Each headline figure of v_headline (same definitions) at each checkpoint, one line per training "
        f"({n} drawn). Round points are trajectory points: the streamed sections, retrieval and separability "
        "only; diamonds had the full suite (first, last and named checkpoints), which alone has the UMAP-based "
        "mixing ratio. Each checkpoint is a run, identified by its sha256, measured on its training's fixed "
        "evaluation set.",
        chart=trajectory_chart(df.select([c for c in df.columns if c in {*_TABLE_COLS, "training_id"}]))
        if df.height else None,
        missing=None if df.height else "no tracked checkpoint is measured yet (clipgeo track CHECKPOINT_DIR ...)",
        status=STATUS_OK if df.height else "empty",
        views=("v_trajectory",), query='clipgeo sql "select * from v_trajectory"'))
    page.add(Section(
        "Points", "One row per training x checkpoint (view v_trajectory).",
        table=df.select([c for c in _TABLE_COLS if c in df.columns]).to_dicts() if df.height else None,
        missing=None if df.height else "no points", status=STATUS_OK if df.height else "empty",
        views=("v_trajectory",), query='clipgeo sql "select * from v_trajectory"'))
    return page


def write_trajectory(home: DataHome) -> Path:
    """Write ``reports/trajectory.html``; returns its path."""
    home.reports.mkdir(parents=True, exist_ok=True)
    with catalog.session(home, read_only=True) as con:
        use_current_views(con)
        text = trajectory_page(con).render()
    return write_page(home.reports / PAGE, text)


def index_section(reports: Path) -> Section | None:
    """The index page's link to the trajectory page, when it exists."""
    if not (reports / PAGE).exists():
        return None
    return Section("Trajectories", "Headline figures checkpoint by checkpoint, one line per tracked training.",
                   html_block=f'<p><a href="{html.escape(PAGE)}" id="trajectory-link">trajectory page</a></p>',
                   query='clipgeo sql "select * from v_trajectory"')
