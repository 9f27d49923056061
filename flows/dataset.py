"""Your own data through the same stages: ingest a source, embed it with each model,
measure, report — the ``clipgeo-dataset`` flow (``clipgeo dataset SOURCE PATH ...``).

Sources (``clipgeo.sources``): ``coco`` (``path`` = ``captions_*.json``, ``image_dir`` = the
images, optional Karpathy split), ``folder`` (``path`` = a csv / jsonl / parquet captions
file, ``image_dir`` = the image root), ``webdataset`` (``path`` = a tar or brace pattern, e.g.
``/data/shards/{00000..00099}.tar``), ``embeddings`` (``path`` = a clip-retrieval / LAION
release folder with ``img_emb/``, ``text_emb/``, ``metadata/``; no model needed).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from clipgeo.config import DataHome
from clipgeo.stages import ingest
from flows.caching import analysis_current
from flows.embed import embed_flow, task_runner_for
from flows.pipeline import Stage, parse_model
from flows.summary import collect_summary, format_summary, summary_markdown
from flows.tasks import measure, report

Source = Literal["coco", "folder", "webdataset", "embeddings"]


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_source(home: str, source: Source, path: str, image_dir: str | None, karpathy_split_file: str | None,
                  split: str | None, name: str | None, limit_images: int | None) -> str:
    """Read a source and register it; returns the dataset id (for ``embeddings``: the run id)."""
    h = DataHome.resolve(home)
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
) -> dict:
    """Ingest ``source`` at ``path``, embed it with each of ``models`` (``NAME=PRETRAINED``:
    an open_clip tag or a checkpoint path, CLOOB checkpoints included), measure and report."""
    t0 = time.perf_counter()
    h = DataHome.resolve(home).ensure()
    home_s = str(h.root)
    got = ingest_source(home_s, source, path, image_dir, karpathy_split_file, split, name, limit_images)
    if source == "embeddings":
        run_ids = [got]
    else:
        if not models:
            raise ValueError("no models given: pass models=['NAME=PRETRAINED', ...] (e.g. ViT-B-16=laion400m_e32)")
        embed = embed_flow.with_options(task_runner=task_runner_for(cluster_address))
        run_ids = [embed(ref.model_name, got, ref.pretrained, home=home_s, force="embed" in force, device=device)
                   for ref in map(parse_model, models)]
    meas = measure.with_options(refresh_cache="measure" in force or "embed" in force)
    for run_id in run_ids:
        if cluster_address:  # the streamed pass per Lance fragment range on the Dask workers (flows/measure_dist.py)
            from flows.measure_dist import measure_dist_flow

            measure_dist_flow.with_options(task_runner=task_runner_for(cluster_address))(run_id, home_s)
            continue
        meas(home_s, run_id)
        if not analysis_current(home_s, run_id):
            meas.with_options(refresh_cache=True)(home_s, run_id)
    paths = report(home_s, run_ids) if make_report else []
    summary = collect_summary(h, run_ids, paths, seconds=time.perf_counter() - t0)
    print(format_summary(summary))
    create_markdown_artifact(key="clipgeo-dataset-summary", markdown=summary_markdown(summary),
                             description="clipgeo run summary")
    return asdict(summary)
