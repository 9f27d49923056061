"""Embedding as a Prefect flow: shards fan out as tasks with retries, then one commit.

On one machine shards run one after another in-process (the model is loaded once).
Pass ``cluster_address`` (a Dask scheduler, ``tcp://host:8786``) to run the same flow on a
Dask cluster through ``prefect-dask``; each worker loads the model once and keeps it.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from clipgeo.core.config import DataHome
from clipgeo.stages.embedding import (
    DEFAULT_SHARD_IMAGES,
    ModelRef,
    RunPlan,
    Shard,
    commit_run,
    embed_shard,
    mark_failed,
    model_identity,
    prepare_run,
    run_id_for,
)
from clipgeo.store import locks
from flows.checks import check_embed


@task(name="embed-shard", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def embed_shard_task(home: str, plan: RunPlan, shard: Shard, device: str | None, num_workers: int | None = None,
                     decode: str = "auto", precision: str = "auto") -> str:
    """Embed one shard into the run's staging area (skipped when already staged)."""
    return str(embed_shard(DataHome.resolve(home), plan, shard, device=device, progress=False,
                           num_workers=num_workers, decode=decode, precision=precision))


def _without_shards(plan: RunPlan) -> RunPlan:
    return RunPlan(plan.run_id, plan.model_id, plan.dataset_id, plan.ref, plan.cached, plan.n_images, plan.n_texts, [])


@flow(name="clipgeo-embed", task_runner=ThreadPoolTaskRunner(max_workers=1))
def embed_flow(
    model_name: str,
    dataset_id: str,
    pretrained: str | None = None,
    home: str | None = None,
    force: bool = False,
    device: str | None = None,
    shard_images: int = DEFAULT_SHARD_IMAGES,
    num_workers: int | None = None,
    decode: Literal["auto", "tensor", "pil"] = "auto",
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto",
) -> str:
    """Embed ``dataset_id`` with ``model_name``/``pretrained``; returns the run id.

    Skips a run whose vectors are already committed (unless ``force``); resumes an
    interrupted run from its staged shards. A shard that still fails after its retries
    fails the run, named in the error, with nothing committed. One process at a time embeds
    a run (a lock in the data home): a second one waits and then finds the run embedded.

    Args:
        model_name: an open_clip architecture (``clipgeo-tiny-vit``, ``ViT-B-16``, ...).
        dataset_id: a registered dataset (``clipgeo sql "select dataset_id from datasets"``).
        pretrained: an open_clip pretrained tag or a checkpoint path (default: random init).
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
        force: re-embed even when the run's vectors are stored.
        device: ``cuda`` / ``cpu`` (default: CUDA when present).
        shard_images: images per shard (a task each, retried on failure; resume granularity).
        num_workers: image decode / tokenise workers (default: sized to the machine; 0: in process).
        decode: ``tensor`` (batched fast path), ``pil`` (reference) or ``auto`` (fast when the
            model's preprocessing allows).
        precision: model weights (``auto``: fp16 on CUDA, fp32 on CPU).
    """
    log = get_run_logger()
    h = check_embed(model_name, dataset_id, pretrained, home)
    ref = ModelRef(model_name, pretrained)
    run_id = run_id_for(model_identity(ref)[0], dataset_id)
    with locks.claim(h, f"run-{run_id}", on_wait=lambda info: log.info(
            "run %s is being embedded by pid %s on %s: waiting for it", run_id, info.get("pid"), info.get("host"))):
        return _embed_locked(h, ref, dataset_id, force, device, shard_images, num_workers, decode, precision)


def _embed_locked(h: DataHome, ref: ModelRef, dataset_id: str, force: bool, device: str | None,
                  shard_images: int, num_workers: int | None, decode: str, precision: str) -> str:
    log = get_run_logger()
    plan = prepare_run(h, ref, dataset_id, force=force, shard_images=shard_images)
    if plan.cached:
        log.info("run %s already embedded (%d images, %d captions): skipped", plan.run_id, plan.n_images, plan.n_texts)
        return plan.run_id
    log.info("run %s: %d images, %d captions in %d shards", plan.run_id, plan.n_images, plan.n_texts, len(plan.shards))
    t0 = time.perf_counter()
    light = _without_shards(plan)
    futures = [embed_shard_task.submit(str(h.root), light, s, device, num_workers, decode, precision) for s in plan.shards]
    progress = create_progress_artifact(0.0, description=f"run {plan.run_id}: shards embedded (of {len(futures)})")
    for done, _ in enumerate(as_completed(futures), start=1):
        update_progress_artifact(progress, 100.0 * done / len(futures))
    failed = []
    for s, f in zip(plan.shards, futures):
        try:
            f.result()  # the final state (a future's .state can lag behind its completion)
        except Exception as exc:  # noqa: BLE001 - every failed shard is named below
            failed.append((s.index, f"{type(exc).__name__}: {exc}"))
    if failed:
        reasons = "; ".join(f"shard {i}: {why}" for i, why in failed)
        mark_failed(h, plan.run_id, f"{len(failed)} of {len(plan.shards)} shards failed after retries ({reasons})")
        raise RuntimeError(f"run {plan.run_id}: {len(failed)} of {len(plan.shards)} shards failed after retries: {reasons}")
    done = commit_run(h, plan, seconds=time.perf_counter() - t0)
    log.info("run %s: embedded %d images + %d captions in %.1f s", done.run_id, done.n_images, done.n_texts, done.embed_seconds)
    return done.run_id


def task_runner_for(cluster_address: str | None):
    """The task runner for a cluster address: Dask when given, in-process threads otherwise."""
    if not cluster_address:
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=cluster_address)
