"""Distributed measurement: the streamed pass over every vector, split by Lance row ranges.

``clipgeo-measure-dist`` splits a run's Lance table into ``parts`` contiguous ranges of
physical rows (``(fragment, offset, limit)`` slices, so one large fragment splits too); each range's
moments (raw and normalised, per modality: :func:`clipgeo.streaming.partials.moment_partial`) are one
Prefect task, run by the flow's task runner — in-process threads by default, the workers of a
Dask cluster with ``cluster_address`` (or any ``DaskTaskRunner`` via ``with_options``). Tasks
receive the table's URI and row slices (never arrays) and return O(d²) accumulators; the flow
merges them exactly in table order and hands the result to
:func:`clipgeo.stages.measure.measure_run`, whose streamed sections (modality gap, spectra,
double-ellipsoid pass 1, origin-shift means) then use it instead of scanning again.

The per-sample pass (radius, Mahalanobis radius, conformity, cosines to the means, length of
every vector: :func:`clipgeo.streaming.partials.per_sample_partial`) is a second round of tasks over the same
ranges, given the merged moments; each writes its rows with their ids to a Parquet part in a
scratch folder of the data home (``<home>/tmp/measure-<run>-…``), which the catalog then loads
inside DuckDB (``geo_per_sample``) and the suite's summaries read back. The paired cosines,
the hash sample and retrieval (bounded by their stated sizes) run in the flow's process.

The workers must see the table's URI (a shared filesystem path, or an object-store URI Lance
reads: ``s3://…``, ``gs://…``, ``az://…``) and the data home's ``tmp`` folder (a shared
filesystem).
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from clipgeo.core.config import DataHome
from clipgeo.streaming.partials import merge_partials, moment_partial, per_sample_partial, per_sample_plans
from clipgeo.stages.freshness import measure_if_stale
from clipgeo.stages.measure import MeasureResult, measure_run
from clipgeo.store.scratch import scratch
from clipgeo.streaming.reader import LanceRun
from flows.embed import task_runner_for


#: Default number of row ranges: enough to keep a few workers busy, each range still large.
DEFAULT_PARTS = 8


@task(name="moments-row-range", cache_policy=NO_CACHE, retries=2)
def moments_task(uri: str, slices: list[tuple[int, int, int]]) -> dict:
    """Moments of one row range of a run's table (see :func:`clipgeo.streaming.partials.moment_partial`)."""
    return moment_partial(uri, slices)


@task(name="per-sample-row-range", cache_policy=NO_CACHE, retries=2)
def per_sample_task(uri: str, plans: dict, out_path: str, slices: list[tuple[int, int, int]]) -> str:
    """The per-sample pass of one row range into a Parquet part (see :func:`clipgeo.streaming.partials.per_sample_partial`)."""
    per_sample_partial(uri, plans, out_path, slices)
    return out_path


class DistributedRunner:
    """A runner for :func:`clipgeo.stages.freshness.measure_if_stale`: the streamed partials per
    row range as tasks on the flow's task runner, then :func:`measure_run` on the merged result.
    ``ranges`` is the number of row ranges of the last call."""

    def __init__(self, parts: int | None) -> None:
        self.parts, self.ranges = parts or DEFAULT_PARTS, 0

    def __call__(self, h: DataHome, run_id: str, *, sections: list[str] | None = None, **kw) -> MeasureResult:
        stream = LanceRun.open(h, run_id)
        ranges = stream.row_slices(self.parts)
        futures = [moments_task.submit(stream.uri, grp) for grp in ranges]
        merged = merge_partials([f.result() for f in futures])
        with scratch(h, f"measure-{run_id}") as work:
            per_sample = None
            if sections is None or "double_ellipsoid" in sections:
                plans = per_sample_plans(merged)
                pending = [per_sample_task.submit(stream.uri, plans, str(work / f"per_sample-{i:05d}.parquet"), grp)
                           for i, grp in enumerate(ranges)]
                per_sample = [f.result() for f in pending]   # in range order = table order
            res = measure_run(h, run_id, moments=merged, sections=sections, per_sample_parts=per_sample, **kw)
        self.ranges = len(ranges)
        return res


@flow(name="clipgeo-measure-dist", log_prints=True)
def measure_dist_flow(run_id: str, home: str | None = None, parts: int | None = None,
                      cluster_address: str | None = None, sections: list[str] | None = None,
                      umap_grid: bool = False, force: bool = False) -> dict:
    """Measure one run with its streamed moments computed per row range on the task runner.

    The same rule as every other path decides whether it runs at all
    (:func:`clipgeo.stages.freshness.measure_if_stale`: the run's lock, the storage-format
    migration, reuse of a current measurement, the recorded state).
    ``parts``: row ranges (default :data:`DEFAULT_PARTS`). ``cluster_address``: a Dask
    scheduler (``tcp://host:8786``); without it the ranges run in this process. ``sections``:
    only these (default: all). ``umap_grid``: also fit the UMAP grid. ``force``: measure even
    when the stored measurement is current.
    Returns ``{"rows": {table: n}, "sections": {section: status}, "parts": n, "reused": why or None}``
    (``parts`` 0 and empty rows when reused).
    """
    h = DataHome.resolve(home)
    runner = DistributedRunner(parts)
    res, why = measure_if_stale(h, run_id, force=force, umap_grid=umap_grid, sections=sections, runner=runner)
    log = get_run_logger()
    if res is None:
        log.info("reused: %s", why)
        return {"rows": {}, "sections": {}, "parts": 0, "reused": why}
    log.info("run %s measured from %d row ranges (%s): %s", run_id, runner.ranges, why, res.sections)
    return {"rows": res.rows, "sections": res.sections, "parts": runner.ranges, "reused": None}


def measure_dist(run_id: str, home: str | None = None, parts: int | None = None,
                 cluster_address: str | None = None, sections: list[str] | None = None,
                 umap_grid: bool = False, force: bool = False) -> dict:
    """:func:`measure_dist_flow` on the task runner for ``cluster_address`` (Dask when given)."""
    runner = task_runner_for(cluster_address)
    return measure_dist_flow.with_options(task_runner=runner)(run_id, home, parts, cluster_address, sections,
                                                             umap_grid, force)
