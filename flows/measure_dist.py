"""Distributed measurement: the streamed pass over every vector, split by Lance row ranges.

``clipgeo-measure-dist`` splits a run's Lance table into ``parts`` contiguous ranges of
physical rows (``(fragment, offset, limit)`` slices, so one large fragment splits too); each range's
moments (raw and normalised, per modality: :func:`clipgeo.scale.moment_partial`) are one
Prefect task, run by the flow's task runner — in-process threads by default, the workers of a
Dask cluster with ``cluster_address`` (or any ``DaskTaskRunner`` via ``with_options``). Tasks
receive the table's URI and row slices (never arrays) and return O(d²) accumulators; the flow
merges them exactly in table order and hands the result to
:func:`clipgeo.stages.measure.measure_run`, whose streamed sections (modality gap, spectra,
double-ellipsoid pass 1, origin-shift means) then use it instead of scanning again. The other
passes (per-sample radii and conformity, paired cosines, samples, retrieval) run in the flow's
process, streamed. The workers must see the table's URI: a shared filesystem path, or an
object-store URI Lance reads (``s3://…``, ``gs://…``, ``az://…``).
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from clipgeo.config import DataHome
from clipgeo.scale import merge_partials, moment_partial
from clipgeo.stages.measure import measure_run
from clipgeo.stream import LanceRun
from flows.embed import task_runner_for


#: Default number of row ranges: enough to keep a few workers busy, each range still large.
DEFAULT_PARTS = 8


@task(name="moments-row-range", cache_policy=NO_CACHE, retries=2)
def moments_task(uri: str, slices: list[tuple[int, int, int]]) -> dict:
    """Moments of one row range of a run's table (see :func:`clipgeo.scale.moment_partial`)."""
    return moment_partial(uri, slices)


@flow(name="clipgeo-measure-dist", log_prints=True)
def measure_dist_flow(run_id: str, home: str | None = None, parts: int | None = None,
                      cluster_address: str | None = None, sections: list[str] | None = None) -> dict:
    """Measure one run with its streamed moments computed per row range on the task runner.

    ``parts``: row ranges (default :data:`DEFAULT_PARTS`). ``cluster_address``: a Dask
    scheduler (``tcp://host:8786``); without it the ranges run in this process. ``sections``:
    only these (default: all).
    Returns ``{"rows": {table: n}, "sections": {section: status}, "parts": n}``.
    """
    h = DataHome.resolve(home)
    run = LanceRun.open(h, run_id)
    ranges = run.row_slices(parts or DEFAULT_PARTS)
    futures = [moments_task.submit(run.uri, grp) for grp in ranges]
    merged = merge_partials([f.result() for f in futures])
    res = measure_run(h, run_id, moments=merged, sections=sections)
    get_run_logger().info("run %s measured from %d row ranges: %s", run_id, len(ranges), res.sections)
    return {"rows": res.rows, "sections": res.sections, "parts": len(ranges)}


def measure_dist(run_id: str, home: str | None = None, parts: int | None = None,
                 cluster_address: str | None = None, sections: list[str] | None = None) -> dict:
    """:func:`measure_dist_flow` on the task runner for ``cluster_address`` (Dask when given)."""
    runner = task_runner_for(cluster_address)
    return measure_dist_flow.with_options(task_runner=runner)(run_id, home, parts, cluster_address, sections)
