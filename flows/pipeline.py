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
from typing import Literal, get_args

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from clipgeo.stages.embedding import ModelRef
from flows import checks
from flows.embed import embed_flow, task_runner_for
from flows.tasks import Progress, measure, report, source_shapes, train_model
from flows.summary import collect_summary, format_summary, summary_markdown
from flows.track import track_trained

#: The one list of objectives (the CLI's choices and the UI's come from this type).
Objective = Literal["infonce", "infoloob", "infonce+hopfield", "infoloob+hopfield"]
ABLATION: list[Objective] = list(get_args(Objective))
Stage = Literal["train", "embed", "measure"]
assert tuple(ABLATION) == checks.OBJECTIVES


def parse_model(spec: str) -> ModelRef:
    """``NAME`` or ``NAME=PRETRAINED`` (an open_clip tag or a checkpoint path) -> ModelRef."""
    return ModelRef(*checks.parse_model(spec))


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
    save_every: int = 100,
    models: list[str] = [],  # noqa: B006
    force: list[Stage] = [],  # noqa: B006
    device: str | None = None,
    make_report: bool = True,
    cluster_address: str | None = None,
    embed_train_split: bool = True,
    umap_grid: bool = False,
    num_workers: int | None = None,
    decode: Literal["auto", "tensor", "pil"] = "auto",
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto",
) -> dict:
    """The whole pipeline on the ``shapes`` default.

    Args:
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
        n_train: ``shapes`` images to train the tiny models on.
        n_val: held-out ``shapes`` images that are embedded, measured and reported.
        captions_per_image: captions generated per ``shapes`` image.
        image_size: ``shapes`` image side in pixels.
        seed: seeds the dataset, the training and the measurements.
        objectives: tiny models to train on the train split: InfoNCE (CLIP's loss), InfoLOOB
            (CLOOB's), each optionally ``+hopfield`` (CLOOB's Hopfield retrieval layer).
        train_steps: optimiser steps per tiny model.
        save_every: also keep each tiny model's weights at step 0 and every this many steps, and
            measure them as a trajectory (reports/trajectory.html; light points, the full suite
            on the first and the last); 0 or >= train_steps: none.
        models: extra models to embed, ``NAME=PRETRAINED`` (open_clip tag or checkpoint path).
        force: stages to redo even when their results are stored (train, embed, measure).
        device: ``cuda`` / ``cpu`` (default: CUDA when present).
        make_report: write the HTML reports.
        cluster_address: a Dask scheduler address to embed on (default: this machine).
        embed_train_split: also embed the train split with each model, as the reference
            ("training-like") run for the nearest-reference and cross-dataset separability
            measurements; only the val runs are measured and reported.
        umap_grid: also fit the UMAP hyperparameter grid (16 layouts) for each run.
        num_workers, decode, precision: the embed stage's decode workers (None = sized to the
            machine), image path (tensor fast path / pil reference) and model precision.
    """
    t0 = time.perf_counter()
    h = checks.check_pipeline(home=home, n_train=n_train, n_val=n_val, captions_per_image=captions_per_image,
                              image_size=image_size, objectives=objectives, train_steps=train_steps,
                              models=models).ensure()
    home_s = str(h.root)
    n_models = len(objectives) + len(models)
    progress = Progress(1 + len(objectives) + n_models * (2 + embed_train_split) + make_report, "clipgeo pipeline")
    splits = source_shapes(home_s, n_train, n_val, captions_per_image, image_size, seed)
    progress.step("dataset ready")
    refs: list[ModelRef] = []
    trained: list[tuple[str, str]] = []
    for variant in objectives:
        objective, _, extra = variant.partition("+")
        ckpt = train_model(home_s, splits["train"], objective, extra == "hopfield", train_steps, seed,
                           force="train" in force, save_every=save_every)
        progress.step(f"{variant} model ready")
        refs.append(ModelRef("clipgeo-tiny-vit", ckpt))
        trained.append((variant, ckpt))
    refs += [parse_model(m) for m in models]
    run_ids = []
    embed = embed_flow.with_options(task_runner=task_runner_for(cluster_address))
    for ref in refs:
        if embed_train_split:
            embed(ref.model_name, splits["train"], ref.pretrained, home=home_s, force="embed" in force, device=device,
                  num_workers=num_workers, decode=decode, precision=precision)
            progress.step(f"{ref.model_name} train split embedded")
        run_id = embed(ref.model_name, splits["val"], ref.pretrained, home=home_s, force="embed" in force, device=device,
                  num_workers=num_workers, decode=decode, precision=precision)
        progress.step(f"run {run_id} embedded")
        measure(home_s, run_id, umap_grid, force="measure" in force or "embed" in force)
        progress.step(f"run {run_id} measured")
        run_ids.append(run_id)
    if 0 < save_every < train_steps:   # the trajectories of the tiny trainings (flows/track.py)
        track_trained(h, trained, splits["val"], device=device, make_report=make_report)
    paths = report(home_s, run_ids) if make_report else []
    progress.step("done")
    summary = collect_summary(h, run_ids, paths, seconds=time.perf_counter() - t0)
    print(format_summary(summary))
    create_markdown_artifact(key="clipgeo-pipeline-summary", markdown=summary_markdown(summary), description="clipgeo run summary")
    return asdict(summary)


@flow(name="clipgeo-ablation", log_prints=True)
def ablation(home: str | None = None, n_train: int = 4000, n_val: int = 1000, train_steps: int = 400, seed: int = 0,
             cluster_address: str | None = None) -> dict:
    """The paper's ablation (Section III.B): {InfoNCE, InfoLOOB} x {without, with Hopfield},
    four tiny models trained on ``shapes`` and run through the whole pipeline.

    Args:
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
        n_train: ``shapes`` images to train the tiny models on.
        n_val: held-out ``shapes`` images that are embedded, measured and reported.
        train_steps: optimiser steps per tiny model.
        seed: seeds the dataset, the training and the measurements.
        cluster_address: a Dask scheduler address to embed on (default: this machine).
    """
    return pipeline(home=home, n_train=n_train, n_val=n_val, seed=seed, objectives=ABLATION, train_steps=train_steps,
                    cluster_address=cluster_address)


if __name__ == "__main__":
    from flows.cli import main

    raise SystemExit(main(["run", *__import__("sys").argv[1:]]))
