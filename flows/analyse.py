"""Re-analysis and report flows: the stages after embedding, on runs already stored.

- ``clipgeo-analyse``: measure the given runs, or every embedded run, or (``stale_only``)
  only runs whose analysis is older than the code's ``ANALYSIS_VERSION`` — the nightly job.
- ``clipgeo-report``: write the per-run reports and the comparison report from the catalog
  alone — the weekly job.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from clipgeo.core.config import ANALYSIS_VERSION, DataHome
from clipgeo.store import catalog
from flows.checks import usable_home
from flows.tasks import Progress, measure, report


def _select_runs(home: DataHome, *, stale_only: bool, statuses: tuple[str, ...]) -> list[str]:
    if not home.catalog.exists():
        return []
    with catalog.session(home) as con:
        sql = "SELECT run_id FROM runs WHERE list_contains(?, status)"
        params: list = [list(statuses)]
        if stale_only:
            sql += " AND (analysis_version IS DISTINCT FROM ? OR status = 'embedded')"
            params.append(ANALYSIS_VERSION)
        return [r for (r,) in catalog.execute(con, sql + " ORDER BY label", params)]


@flow(name="clipgeo-analyse", log_prints=True)
def analyse_flow(run_ids: list[str] | None = None, home: str | None = None, stale_only: bool = False,
                 force: bool = False, umap_grid: bool = False, reference_run_id: str | None = None) -> list[str]:
    """Measure runs already embedded.

    A run whose stored measurement was made from its current vectors by this analysis
    version, with the same options, is not measured again (unless ``force``).

    Args:
        run_ids: runs to measure (default: every embedded or measured run).
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
        stale_only: only runs whose stored analysis predates this code (or was never made).
        force: measure again even when the stored measurement is current.
        umap_grid: also fit the UMAP hyperparameter grid (16 layouts) for each run.
        reference_run_id: the run of the same model on a training-like dataset, for the
            nearest-reference and cross-dataset separability measurements (default: the
            same model's run on the ``train`` split of the same source, when embedded).
    """
    h = usable_home(home)
    ids = run_ids or _select_runs(h, stale_only=stale_only, statuses=("embedded", "measured"))
    log = get_run_logger()
    if not ids:
        log.info("no runs to analyse in %s (analysis version %s)", h.root, ANALYSIS_VERSION)
        return []
    progress = Progress(len(ids), "clipgeo analyse")
    for run_id in ids:
        measure(str(h.root), run_id, umap_grid, force=force, reference_run_id=reference_run_id)
        progress.step(f"run {run_id} measured")
    log.info("analysed %d runs: %s", len(ids), ", ".join(ids))
    return ids


@flow(name="clipgeo-report", log_prints=True)
def report_flow(run_ids: list[str] | None = None, home: str | None = None, full_paths: bool = False) -> list[str]:
    """Write the reports of the given runs, their comparison and the index page, from the catalog alone.

    Args:
        run_ids: runs to report (default: every measured run).
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
        full_paths: keep local paths as stored (default: shareable, relative to the data home,
            else file name + content hash).
    """
    h = usable_home(home)
    ids = run_ids or _select_runs(h, stale_only=False, statuses=("measured",))
    if not ids:
        get_run_logger().info("no measured runs in %s: nothing to report", h.root)
        return []
    paths = report(str(h.root), ids, full_paths)
    create_markdown_artifact(
        key="clipgeo-reports",
        markdown="# clipgeo reports\n\n" + "\n".join(f"- `{p}`" for p in paths),
        description=f"reports for {len(ids)} runs",
    )
    return paths
