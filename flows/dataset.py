"""Your own data through the same stages: ingest a source, embed it with each model,
measure, report — the ``clipgeo-dataset`` flow (``clipgeo dataset SOURCE PATH ...``).

Sources (``clipgeo.sources``): ``coco`` (``path`` = ``captions_*.json``, ``image_dir`` = the
images, optional Karpathy split), ``folder`` (``path`` = a csv / jsonl / parquet captions
file, ``image_dir`` = the image root), ``webdataset`` (``path`` = a tar or brace pattern, e.g.
``/data/shards/{00000..00099}.tar``), ``embeddings`` (``path`` = a clip-retrieval / LAION
release folder with ``img_emb/``, ``text_emb/``, ``metadata/``; no model needed).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from clipgeo.core.config import DataHome
from clipgeo.stages import ingest
from clipgeo.store import locks
from flows.checks import check_dataset
from flows.embed import embed_flow, task_runner_for
from flows.pipeline import Stage, parse_model
from flows.summary import collect_summary, format_summary, summary_markdown
from flows.tasks import Progress, measure, report

Source = Literal["coco", "folder", "webdataset", "embeddings"]


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_source(home: str, source: Source, path: str, image_dir: str | None, karpathy_split_file: str | None,
                  split: str | None, name: str | None, limit_images: int | None) -> str:
    """Read a source and register it; returns the dataset id (for ``embeddings``: the run id).

    One process at a time reads a given source into a home (a lock in the data home)."""
    h = DataHome.resolve(home)
    key = hashlib.sha1(repr((source, path, image_dir, karpathy_split_file, split, name, limit_images)).encode())
    with locks.claim(h, f"ingest-{key.hexdigest()[:16]}"):
        return _ingest(h, source, path, image_dir, karpathy_split_file, split, name, limit_images)


def _ingest(h: DataHome, source: Source, path: str, image_dir: str | None, karpathy_split_file: str | None,
            split: str | None, name: str | None, limit_images: int | None) -> str:
    log = get_run_logger()
    if source == "embeddings":
        from clipgeo.stages.imports import import_embeddings

        return import_embeddings(h, Path(path), name=name)
    if source in ("coco", "folder") and not image_dir:
        raise ValueError(f"source {source!r} needs image_dir (the folder holding the images)")
    if source == "coco":
        info = ingest.ingest_coco(h, Path(path), Path(image_dir), name=name, split=split, limit_images=limit_images,
                                  karpathy_split_file=Path(karpathy_split_file) if karpathy_split_file else None)
    elif source == "folder":
        info = ingest.ingest_folder(h, Path(image_dir), Path(path), name=name)
    elif source == "webdataset":
        info = ingest.ingest_webdataset(h, path, name=name)
    else:
        raise ValueError(f"unknown source {source!r}: expected coco, folder, webdataset or embeddings")
    log.info("dataset %s has %d images and %d captions (%d rejected while reading)",
             info.dataset_id, info.n_images, info.n_samples, info.n_rejects)
    return info.dataset_id


@flow(name="clipgeo-dataset", log_prints=True)
def dataset_pipeline(
    source: Source,
    path: str,
    image_dir: str | None = None,
    models: list[str] = [],  # noqa: B006
    karpathy_split_file: str | None = None,
    split: str | None = None,
    name: str | None = None,
    limit_images: int | None = None,
    home: str | None = None,
    force: list[Stage] = [],  # noqa: B006
    device: str | None = None,
    cluster_address: str | None = None,
    make_report: bool = True,
    umap_grid: bool = False,
) -> dict:
    """Ingest ``source`` at ``path``, embed it with each of ``models``, measure and report.

    Args:
        source: the kind of source (see the module's docstring).
        path: coco: ``captions_*.json``; folder: the captions file; webdataset: a tar path
            or brace pattern; embeddings: the release folder.
        image_dir: coco / folder: the folder holding the images.
        models: models to embed with, ``NAME=PRETRAINED`` (an open_clip tag or a checkpoint
            path, CLOOB checkpoints included).
        karpathy_split_file: coco: the Karpathy split file (``dataset_coco.json``).
        split: coco with a Karpathy split: train, val, test, restval or ``a+b``.
        name: a name for the dataset id.
        limit_images: read at most this many images.
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
        force: stages to redo even when their results are stored (embed, measure).
        device: ``cuda`` / ``cpu`` (default: CUDA when present).
        cluster_address: a Dask scheduler address to embed on (default: this machine).
        make_report: write the HTML reports.
        umap_grid: also fit the UMAP hyperparameter grid (16 layouts) for each run.
    """
    t0 = time.perf_counter()
    h = check_dataset(source, path, image_dir=image_dir, models=models, karpathy_split_file=karpathy_split_file,
                      split=split, home=home, limit_images=limit_images).ensure()
    home_s = str(h.root)
    n_runs = 1 if source == "embeddings" else len(models)
    progress = Progress(1 + 2 * n_runs + make_report, "clipgeo dataset")
    got = ingest_source(home_s, source, path, image_dir, karpathy_split_file, split, name, limit_images)
    progress.step("dataset read")
    if source == "embeddings":
        run_ids = [got]
    else:
        embed = embed_flow.with_options(task_runner=task_runner_for(cluster_address))
        run_ids = []
        for ref in map(parse_model, models):
            run_ids.append(embed(ref.model_name, got, ref.pretrained, home=home_s, force="embed" in force,
                                 device=device))
            progress.step(f"run {run_ids[-1]} embedded")
    for run_id in run_ids:
        if cluster_address:  # the streamed pass per Lance fragment range on the Dask workers (flows/measure_dist.py)
            from flows.measure_dist import measure_dist_flow

            measure_dist_flow.with_options(task_runner=task_runner_for(cluster_address))(
                run_id, home_s, umap_grid=umap_grid, force="measure" in force or "embed" in force)
        else:
            measure(home_s, run_id, umap_grid, force="measure" in force or "embed" in force)
        progress.step(f"run {run_id} measured")
    paths = report(home_s, run_ids) if make_report else []
    progress.step("done")
    summary = collect_summary(h, run_ids, paths, seconds=time.perf_counter() - t0)
    print(format_summary(summary))
    create_markdown_artifact(key="clipgeo-dataset-summary", markdown=summary_markdown(summary),
                             description="clipgeo run summary")
    return asdict(summary)
