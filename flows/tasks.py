"""Prefect tasks shared by the flows: thin wrappers over ``clipgeo.stages`` and ``dashboards``.

One caching mechanism, for every stage: the stage looks at the data home's own state, under a
lock on its unit of work (:func:`clipgeo.store.locks.claim`), and does the work only when the
stored result is missing or was made from other inputs:

============  ===========================  =============================================
stage         unit (lock)                  "already done" when the store holds
============  ===========================  =============================================
source        ``source-<dataset id>``      the generated dataset and its registered splits
train         ``train-<spec key>``         the checkpoint + sidecar of that trainer spec
                                           hash (spec, dataset, trainer version), sha256 ok
embed         ``run-<run id>``             the run ``embedded`` with its Lance table's
                                           row counts matching (flows/embed.py)
measure       ``run-<run id>``             ``stage_state['measure:<run id>']`` equal to the
                                           run's Lance version, its reference run and that
                                           run's Lance version, the options and
                                           ``ANALYSIS_VERSION``
============  ===========================  =============================================

A second pipeline that reaches a unit another holds waits for it, then reuses its result; a
crashed holder's lock dies with its process. Nothing is cached outside the data home (no
Prefect result persistence). A task that reuses a stored result logs ``reused: <why>``;
``force`` redoes a stage. Progress bars are drawn only on a terminal; flows publish progress
as Prefect progress artifacts instead.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from clipgeo.core.config import DataHome, torch_threads
from clipgeo.stages.ingest import ingest_shapes, load_samples
from clipgeo.store import locks


def progress_bars() -> bool:
    """Draw tqdm bars only when stderr is a terminal (never into logs or the Prefect UI)."""
    return sys.stderr.isatty()


class Progress:
    """A Prefect progress artifact for a flow (the UI's progress bar), stepped as stages finish."""

    def __init__(self, total: int, what: str) -> None:
        from prefect.artifacts import create_progress_artifact

        self.total, self.done, self.what = max(total, 1), 0, what
        self.id = create_progress_artifact(0.0, description=f"{what}: starting")

    def step(self, note: str) -> None:
        from prefect.artifacts import update_progress_artifact

        self.done = min(self.done + 1, self.total)
        update_progress_artifact(self.id, 100.0 * self.done / self.total,
                                 description=f"{self.what}: {note} ({self.done}/{self.total})")


def cached(value: Any, why: str) -> Any:
    """The task's result, reused from the store: logs why the work was not redone."""
    get_run_logger().info("reused: %s", why)
    return value


def _waiting(unit: str):
    def note(info: dict) -> None:
        get_run_logger().info("%s is being done by pid %s on %s (since %s): waiting to reuse its result",
                              unit, info.get("pid"), info.get("host"), info.get("since"))
    return note


@task(name="source-shapes", cache_policy=NO_CACHE)
def source_shapes(home: str, n_train: int, n_val: int, captions_per_image: int, image_size: int, seed: int) -> dict[str, str]:
    """Generate (or reuse) ``shapes`` and register its splits; returns {split: dataset_id}."""
    from clipgeo.sources.shapes import ShapesSpec

    h = DataHome.resolve(home)
    spec = ShapesSpec(n_train=n_train, n_val=n_val, captions_per_image=captions_per_image, image_size=image_size, seed=seed)
    unit = f"source-{spec.dataset_id()}"
    with locks.claim(h, unit, on_wait=_waiting(unit)):
        infos = ingest_shapes(h, spec, progress=progress_bars())
    log = get_run_logger()
    for info in infos.values():
        log.info("dataset %s has %d images and %d captions", info.dataset_id, info.n_images, info.n_samples)
    return {split: info.dataset_id for split, info in infos.items()}


@task(name="train-tiny-model", cache_policy=NO_CACHE)
def train_model(home: str, dataset_id: str, objective: str, hopfield: bool, steps: int, seed: int,
                force: bool = False, save_every: int = 0) -> str:
    """Train (or reuse the stored) tiny model; returns the checkpoint path. ``force`` retrains;
    ``save_every``: also keep the weights every that many steps (:func:`clipgeo.models.train.train_tiny`)."""
    from clipgeo.models.train import TrainSpec, checkpoint_path, train_tiny

    h = DataHome.resolve(home)
    spec = TrainSpec(objective=objective, hopfield=hopfield, steps=steps, seed=seed)  # type: ignore[arg-type]
    unit = f"train-{spec.key(dataset_id)}"
    with locks.claim(h, unit, on_wait=_waiting(unit)):
        if force:
            ckpt = checkpoint_path(spec, h.checkpoints, dataset_id)
            ckpt.with_suffix(".json").unlink(missing_ok=True)  # the sidecar marks a finished checkpoint
            ckpt.unlink(missing_ok=True)
            import shutil

            from clipgeo.models.train import intermediate_dir

            shutil.rmtree(intermediate_dir(ckpt), ignore_errors=True)   # its save_every checkpoints
        res = train_tiny(load_samples(h, dataset_id), spec, h.checkpoints, dataset_id, progress=progress_bars(),
                         num_threads=torch_threads(), save_every=save_every)
    if res.cached:
        return cached(str(res.checkpoint), f"{spec.tag} model of trainer spec {spec.key(dataset_id)[:12]} is stored "
                                           f"at {res.checkpoint} (final loss {res.final_loss:.4f}): not retrained")
    get_run_logger().info("%s model trained in %.0f s, final loss %.4f -> %s", spec.tag, res.seconds, res.final_loss,
                          res.checkpoint)
    return str(res.checkpoint)


@task(name="measure", cache_policy=NO_CACHE)
def measure(home: str, run_id: str, umap_grid: bool = False, force: bool = False,
            reference_run_id: str | None = None) -> str:
    """Every metric table for one run, into DuckDB (replacing that run's rows); returns the run id.

    Skipped when the run's stored measurement was made from the same vectors (Lance version),
    the same reference run, the same options and this ``ANALYSIS_VERSION``: the one rule,
    :func:`clipgeo.stages.freshness.measure_if_stale`.
    """
    from clipgeo.stages.freshness import measure_if_stale

    unit = f"run-{run_id}"
    res, why = measure_if_stale(DataHome.resolve(home), run_id, umap_grid=umap_grid, force=force,
                                reference_run_id=reference_run_id, on_wait=_waiting(unit))
    if res is None:
        return cached(run_id, why)
    get_run_logger().info("run %s measured: %s (%s)", run_id, res.rows, why)
    return run_id


@task(name="report", cache_policy=NO_CACHE)
def report(home: str, run_ids: list[str], full_paths: bool = False) -> list[str]:
    """One HTML report per run, one comparing them and the index page; returns the file paths.
    ``full_paths`` keeps local paths as stored (default: shareable, relative to the data home)."""
    from dashboards.build import write_reports

    return [str(p) for p in write_reports(DataHome.resolve(home), run_ids, full_paths=full_paths)]
