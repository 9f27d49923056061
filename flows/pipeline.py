"""The main job: source -> embed -> store -> measure -> report, as one Prefect flow.

Run it with ``clipgeo run`` (or ``python -m flows.pipeline``). On the offline default it
generates the ``shapes`` dataset, trains two tiny open_clip models (InfoNCE and InfoLOOB)
on its train split, embeds its held-out val split with each, measures, and writes an HTML
report per run plus one comparing them.

Every stage skips work that is already done in the data home (same dataset parameters,
same checkpoint hash, same code version), so a second run only re-measures and re-reports.
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
from clipgeo.stages.embedding import ModelRef
from clipgeo.stages.ingest import ingest_shapes, load_samples
from clipgeo.stages.measure import measure_run
from flows.embed import embed_flow, task_runner_for
from flows.summary import collect_summary, format_summary, summary_markdown

Objective = Literal["infonce", "infoloob"]


@task(name="source-shapes", cache_policy=NO_CACHE)
def source_shapes(home: str, n_train: int, n_val: int, captions_per_image: int, image_size: int, seed: int) -> dict[str, str]:
    """Generate (or reuse) ``shapes`` and register its splits; returns {split: dataset_id}."""
    from clipgeo.sources.shapes import ShapesSpec

    spec = ShapesSpec(n_train=n_train, n_val=n_val, captions_per_image=captions_per_image, image_size=image_size, seed=seed)
    infos = ingest_shapes(DataHome.resolve(home), spec)
    log = get_run_logger()
    for split, info in infos.items():
        log.info("dataset %s has %d images and %d captions", info.dataset_id, info.n_images, info.n_samples)
    return {split: info.dataset_id for split, info in infos.items()}


@task(name="train-tiny-model", cache_policy=NO_CACHE)
def train_model(home: str, dataset_id: str, objective: str, hopfield: bool, steps: int, seed: int) -> str:
    """Train (or reuse the cached) tiny model; returns the checkpoint path."""
    from clipgeo.models.train import TrainSpec, train_tiny

    h = DataHome.resolve(home)
    spec = TrainSpec(objective=objective, hopfield=hopfield, steps=steps, seed=seed)  # type: ignore[arg-type]
    res = train_tiny(load_samples(h, dataset_id), spec, h.checkpoints, dataset_id)
    log = get_run_logger()
    if res.cached:
        log.info("%s model cached at %s (final loss %.4f): not retrained", objective, res.checkpoint, res.final_loss)
    else:
        log.info("%s model trained in %.0f s, final loss %.4f -> %s", objective, res.seconds, res.final_loss, res.checkpoint)
    return str(res.checkpoint)


@task(name="measure", cache_policy=NO_CACHE)
def measure(home: str, run_id: str) -> dict[str, int]:
    """Retrieval, modality gap, separability for one run, into DuckDB."""
    return measure_run(DataHome.resolve(home), run_id).rows


@task(name="report", cache_policy=NO_CACHE)
def report(home: str, run_ids: list[str]) -> list[str]:
    """One HTML report per run and one comparing them; returns the file paths."""
    from dashboards.build import write_reports

    return [str(p) for p in write_reports(DataHome.resolve(home), run_ids)]


def parse_model(spec: str) -> ModelRef:
    """``NAME`` or ``NAME=PRETRAINED`` (an open_clip tag or a checkpoint path) -> ModelRef."""
    name, _, pretrained = spec.partition("=")
    if not name:
        raise ValueError(f"model {spec!r}: expected NAME or NAME=PRETRAINED (open_clip tag or checkpoint path)")
    return ModelRef(name.strip(), pretrained.strip() or None)


@flow(name="clipgeo-pipeline", log_prints=True)
def pipeline(
    home: str | None = None,
    n_train: int = 4000,
    n_val: int = 1000,
    captions_per_image: int = 3,
    image_size: int = 64,
    seed: int = 0,
    objectives: list[Objective] = ["infonce", "infoloob"],  # noqa: B006 (Prefect shows it in the UI)
    train_steps: int = 400,
    models: list[str] = [],  # noqa: B006
    force_embed: bool = False,
    device: str | None = None,
    make_report: bool = True,
    cluster_address: str | None = None,
) -> dict:
    """The whole pipeline on the ``shapes`` default.

    Args:
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
        n_train, n_val, captions_per_image, image_size, seed: the ``shapes`` dataset.
        objectives: tiny models to train on the train split (InfoNCE = CLIP, InfoLOOB = CLOOB).
        train_steps: optimiser steps per tiny model.
        models: extra models to embed, ``NAME=PRETRAINED`` (open_clip tag or checkpoint path).
        force_embed: re-embed even when a run's vectors are already stored.
        device: ``cuda`` / ``cpu`` (default: CUDA when present).
        make_report: write the HTML reports.
        cluster_address: a Dask scheduler address to embed on (default: this machine).
    """
    t0 = time.perf_counter()
    h = DataHome.resolve(home).ensure()
    home_s = str(h.root)
    splits = source_shapes(home_s, n_train, n_val, captions_per_image, image_size, seed)
    refs: list[ModelRef] = []
    for objective in objectives:
        ckpt = train_model(home_s, splits["train"], objective, False, train_steps, seed)
        refs.append(ModelRef("clipgeo-tiny-vit", ckpt))
    refs += [parse_model(m) for m in models]
    run_ids = []
    embed = embed_flow.with_options(task_runner=task_runner_for(cluster_address))
    for ref in refs:
        run_id = embed(ref.model_name, splits["val"], ref.pretrained, home=home_s, force=force_embed, device=device)
        measure(home_s, run_id)
        run_ids.append(run_id)
    paths = report(home_s, run_ids) if make_report else []
    summary = collect_summary(h, run_ids, paths, seconds=time.perf_counter() - t0)
    print(format_summary(summary))
    create_markdown_artifact(key="clipgeo-pipeline-summary", markdown=summary_markdown(summary), description="clipgeo run summary")
    return asdict(summary)


if __name__ == "__main__":
    from flows.cli import main

    raise SystemExit(main(["run"]))
