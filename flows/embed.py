"""Embedding as a Prefect flow: shards fan out as tasks with retries, then one commit.

On one machine shards run one after another in-process (the model is loaded once).
Pass ``cluster_address`` (a Dask scheduler, ``tcp://host:8786``) to run the same flow on a
Dask cluster through ``prefect-dask``; each worker loads the model once and keeps it.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from clipgeo.config import DataHome
from clipgeo.stages.embedding import (
    DEFAULT_SHARD_IMAGES,
    ModelRef,
    RunPlan,
    Shard,
    commit_run,
    embed_shard,
    mark_failed,
    prepare_run,
)


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

    ``num_workers``: image decode / tokenise workers (None = sized to the machine, 0 = in
    process); ``decode``: ``tensor`` fast path, ``pil`` reference, ``auto`` (fast when the
    model's preprocess allows); ``precision``: model weights (``auto`` = fp16 on CUDA, fp32 on CPU).

    Skips a run whose vectors are already committed (unless ``force``); resumes an
    interrupted run from its staged shards. A shard that still fails after its retries
    fails the run, named in the error, with nothing committed.
    """
    log = get_run_logger()
    h = DataHome.resolve(home)
    plan = prepare_run(h, ModelRef(model_name, pretrained), dataset_id, force=force, shard_images=shard_images)
    if plan.cached:
        log.info("run %s already embedded (%d images, %d captions): skipped", plan.run_id, plan.n_images, plan.n_texts)
        return plan.run_id
    log.info("run %s: %d images, %d captions in %d shards", plan.run_id, plan.n_images, plan.n_texts, len(plan.shards))
    t0 = time.perf_counter()
    light = _without_shards(plan)
    futures = [embed_shard_task.submit(str(h.root), light, s, device, num_workers, decode, precision) for s in plan.shards]
    wait(futures)
    failed = [(s.index, f) for s, f in zip(plan.shards, futures) if not f.state.is_completed()]
    if failed:
        reasons = "; ".join(f"shard {i}: {f.state.message or f.state.name}" for i, f in failed)
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
