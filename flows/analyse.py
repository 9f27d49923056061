"""Re-analysis and report flows: the stages after embedding, on runs already stored.

- ``clipgeo-analyse``: measure the given runs, or every embedded run, or (``stale_only``)
  only runs whose analysis is older than the code's ``ANALYSIS_VERSION`` — the nightly job.
- ``clipgeo-report``: write the per-run reports and the comparison report from the catalog
  alone — the weekly job.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from clipgeo.config import ANALYSIS_VERSION, DataHome
from clipgeo.store import catalog
from flows.caching import analysis_current
from flows.tasks import measure, report


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
                 force: bool = False) -> list[str]:
    """Measure runs already embedded. Default: all of them; ``stale_only``: only those whose
    stored analysis predates this code (or was never made). ``force`` ignores cached results."""
    h = DataHome.resolve(home)
    ids = run_ids or _select_runs(h, stale_only=stale_only, statuses=("embedded", "measured"))
    log = get_run_logger()
    if not ids:
        log.info("no runs to analyse in %s (analysis version %s)", h.root, ANALYSIS_VERSION)
        return []
    task = measure.with_options(refresh_cache=force)
    for run_id in ids:
        task(str(h.root), run_id)
        if not analysis_current(str(h.root), run_id):
            measure.with_options(refresh_cache=True)(str(h.root), run_id)
    log.info("analysed %d runs: %s", len(ids), ", ".join(ids))
    return ids


@flow(name="clipgeo-report", log_prints=True)
def report_flow(run_ids: list[str] | None = None, home: str | None = None, full_paths: bool = False) -> list[str]:
    """Write the reports of the given runs (default: every measured run), their comparison and
    the index page. ``full_paths`` keeps local paths (default: shareable, relative to the home)."""
    h = DataHome.resolve(home)
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
