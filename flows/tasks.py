"""Prefect tasks shared by the flows: thin wrappers over ``clipgeo.stages`` and ``dashboards``.

Training and measuring use Prefect's persisted-result caching with keys from
:mod:`flows.caching`; every stage also skips work already present in the store, so a
re-run is cheap even with a fresh Prefect database.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from clipgeo.config import DataHome
from clipgeo.stages.ingest import ingest_shapes, load_samples
from clipgeo.stages.measure import measure_run
from flows.caching import measure_key, train_key

CACHE_FOR = timedelta(days=30)


@task(name="source-shapes", cache_policy=NO_CACHE)
def source_shapes(home: str, n_train: int, n_val: int, captions_per_image: int, image_size: int, seed: int) -> dict[str, str]:
    """Generate (or reuse) ``shapes`` and register its splits; returns {split: dataset_id}."""
    from clipgeo.sources.shapes import ShapesSpec

    spec = ShapesSpec(n_train=n_train, n_val=n_val, captions_per_image=captions_per_image, image_size=image_size, seed=seed)
    infos = ingest_shapes(DataHome.resolve(home), spec)
    log = get_run_logger()
    for info in infos.values():
        log.info("dataset %s has %d images and %d captions", info.dataset_id, info.n_images, info.n_samples)
    return {split: info.dataset_id for split, info in infos.items()}


@task(name="train-tiny-model", cache_key_fn=train_key, cache_expiration=CACHE_FOR, persist_result=True)
def train_model(home: str, dataset_id: str, objective: str, hopfield: bool, steps: int, seed: int,
                force: bool = False) -> str:
    """Train (or reuse the cached) tiny model; returns the checkpoint path. ``force`` retrains."""
    from clipgeo.models.train import TrainSpec, checkpoint_path, train_tiny

    h = DataHome.resolve(home)
    spec = TrainSpec(objective=objective, hopfield=hopfield, steps=steps, seed=seed)  # type: ignore[arg-type]
    if force:
        ckpt = checkpoint_path(spec, h.checkpoints, dataset_id)
        ckpt.with_suffix(".json").unlink(missing_ok=True)  # the sidecar marks a finished checkpoint
        ckpt.unlink(missing_ok=True)
    res = train_tiny(load_samples(h, dataset_id), spec, h.checkpoints, dataset_id)
    log = get_run_logger()
    if res.cached:
        log.info("%s model found at %s (final loss %.4f): not retrained", spec.tag, res.checkpoint, res.final_loss)
    else:
        log.info("%s model trained in %.0f s, final loss %.4f -> %s", spec.tag, res.seconds, res.final_loss, res.checkpoint)
    return str(res.checkpoint)


@task(name="measure", cache_key_fn=measure_key, cache_expiration=CACHE_FOR, persist_result=True)
def measure(home: str, run_id: str, umap_grid: bool = False) -> dict[str, int]:
    """Every metric table for one run, into DuckDB (replacing that run's rows)."""
    rows = measure_run(DataHome.resolve(home), run_id, umap_grid=umap_grid).rows
    get_run_logger().info("run %s measured: %s", run_id, rows)
    return rows


@task(name="report", cache_policy=NO_CACHE)
def report(home: str, run_ids: list[str], full_paths: bool = False) -> list[str]:
    """One HTML report per run, one comparing them and the index page; returns the file paths.
    ``full_paths`` keeps local paths as stored (default: shareable, relative to the data home)."""
    from dashboards.build import write_reports

    return [str(p) for p in write_reports(DataHome.resolve(home), run_ids, full_paths=full_paths)]
