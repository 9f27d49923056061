"""Embed stage: one model over one registered dataset, raw vectors into LanceDB.

A run's id is a hash of what determines its vectors (model identity incl. checkpoint
hash, dataset id, embedding code version), so re-running the same job finds its run
already embedded and skips it; ``force=True`` re-embeds.

The work is split into shards (a fixed number of images with all their captions). Each
shard is embedded independently and written atomically to ``<home>/staging/<run_id>/``;
a shard already there is not embedded again, so an interrupted run resumes where it
stopped. When every shard is present, :func:`commit_run` streams them into the run's
LanceDB table in one commit and only then marks the run ``embedded``: a crash at any
point leaves either no table or a complete one, never a half-written run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa


import clipgeo
from clipgeo.core.config import DataHome
from clipgeo.models.train import sha256_file
from clipgeo.sources.base import Sample
from clipgeo.stages.ingest import load_samples
from clipgeo.store import catalog, vectors

log = logging.getLogger(__name__)

# Bumped when the embedding path changes what vectors come out (preprocessing, dtype, ...).
# 2: the batched tensor path (clipgeo.embedding.image_path) preprocesses by default: within 1-2 levels
#    of 255 per pixel of open_clip's Pillow transform, not bit-identical.
EMBED_VERSION = "2"


@dataclass(frozen=True)
class ModelRef:
    """How a user names a model: an open_clip architecture plus a pretrained tag or checkpoint path."""

    model_name: str
    pretrained: str | None = None

    def checkpoint_path(self) -> Path | None:
        if self.pretrained and (("/" in self.pretrained) or self.pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))):
            return Path(self.pretrained).expanduser().resolve()
        return None


def checkpoint_meta(path: Path) -> dict:
    """The sidecar metadata clipgeo's trainer writes next to a checkpoint; for a CLOOB
    (ml-jku) checkpoint what its format tells (Hopfield or not); {} for other foreign ones."""
    side = path.with_suffix(".json")
    if side.exists():
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError:
            log.warning("ignoring unreadable checkpoint sidecar %s", side)
    from clipgeo.models.cloob import cloob_state_dict, is_cloob_checkpoint

    if is_cloob_checkpoint(path):
        _, meta = cloob_state_dict(path)
        meta.pop("model_config", None)
        return {**meta, "spec": {"hopfield": "hopfield_beta" in meta}}
    return {}


def model_identity(ref: ModelRef) -> tuple[str, str | None, dict]:
    """(model_id, checkpoint sha256 or None, sidecar meta) without loading the model."""
    ckpt = ref.checkpoint_path()
    if ckpt is not None:
        if not ckpt.exists():
            raise FileNotFoundError(f"checkpoint {ckpt} (model {ref.model_name}) does not exist")
        sha = sha256_file(ckpt)
        return f"{ref.model_name}@{sha[:12]}", sha, checkpoint_meta(ckpt)
    return f"{ref.model_name}@{ref.pretrained or 'random-init'}", None, {}


def run_id_for(model_id: str, dataset_id: str) -> str:
    key = f"{model_id}|{dataset_id}|embed-v{EMBED_VERSION}"
    return "r" + hashlib.sha1(key.encode()).hexdigest()[:12]


def _label(ref: ModelRef, meta: dict, dataset_id: str) -> str:
    spec = meta.get("spec") or {}
    kind = spec.get("objective")
    if kind:
        kind += "+hopfield" if spec.get("hopfield") else ""
        at = f" step {meta['step']}" if meta.get("final") is False and meta.get("step") is not None else ""
        return f"{ref.model_name} [{kind}{at}] on {dataset_id}"
    if meta.get("format") == "cloob":
        hop = " +hopfield" if spec.get("hopfield") else ""
        return f"{ref.model_name} (CLOOB checkpoint {Path(ref.pretrained or '').name}{hop}) on {dataset_id}"
    return f"{ref.model_name} ({ref.pretrained or 'random init'}) on {dataset_id}"


DEFAULT_SHARD_IMAGES = 2048


@dataclass(frozen=True)
class Shard:
    index: int
    image_ids: tuple[str, ...]
    image_refs: tuple[str, ...]
    sample_ids: tuple[str, ...]
    text_image_ids: tuple[str, ...]
    captions: tuple[str, ...]


@dataclass(frozen=True)
class RunPlan:
    """What embedding a dataset with a model involves; ``cached`` when it is already done."""

    run_id: str
    model_id: str
    dataset_id: str
    ref: ModelRef
    cached: bool
    n_images: int
    n_texts: int
    shards: list[Shard] = field(default_factory=list)
    embed_seconds: float = 0.0


def plan_shards(samples: Sequence[Sample], shard_images: int = DEFAULT_SHARD_IMAGES) -> list[Shard]:
    """Split samples into shards of ``shard_images`` images (sorted by image id) with all their captions."""
    if shard_images < 1:
        raise ValueError(f"shard_images must be >= 1, got {shard_images}")
    by_image: dict[str, list[Sample]] = {}
    for s in samples:
        by_image.setdefault(s.image_id, []).append(s)
    image_ids = sorted(by_image)
    shards = []
    for k, start in enumerate(range(0, len(image_ids), shard_images)):
        ids = image_ids[start : start + shard_images]
        caps = [s for i in ids for s in by_image[i]]
        shards.append(
            Shard(
                index=k,
                image_ids=tuple(ids),
                image_refs=tuple(by_image[i][0].image_ref for i in ids),
                sample_ids=tuple(s.sample_id for s in caps),
                text_image_ids=tuple(s.image_id for s in caps),
                captions=tuple(s.caption for s in caps),
            )
        )
    return shards


def staging_dir(home: DataHome, run_id: str) -> Path:
    return home.root / "staging" / run_id


def shard_file(home: DataHome, run_id: str, index: int) -> Path:
    return staging_dir(home, run_id) / f"shard-{index:05d}.npz"


def prepare_run(home: DataHome, ref: ModelRef, dataset_id: str, *, force: bool = False,
                shard_images: int = DEFAULT_SHARD_IMAGES) -> RunPlan:
    """Register the model and the run, and plan the shards still to embed.

    Returns a plan with ``cached=True`` (and no shards) when the run's vectors are already
    committed with the expected counts and ``force`` is false.
    """
    model_id, sha, meta = model_identity(ref)
    run_id = run_id_for(model_id, dataset_id)
    samples = load_samples(home, dataset_id)
    n_images = len({s.image_id for s in samples})
    with catalog.session(home) as con:
        found = catalog.execute(con, "SELECT status, n_images, n_texts, embed_seconds FROM runs WHERE run_id = ?", [run_id])
    row = found[0] if found else None
    if row and not force and row[0] in ("embedded", "measured"):
        counts = vectors.count_rows(home, run_id)
        if counts.get("image") == row[1] and counts.get("text") == row[2] and row[2] is not None:
            log.info("run %s already embedded (%d images, %d captions): skipped", run_id, row[1], row[2])
            return RunPlan(run_id, model_id, dataset_id, ref, True, row[1], row[2], [], row[3] or 0.0)
    if force:
        shutil.rmtree(staging_dir(home, run_id), ignore_errors=True)
    spec = meta.get("spec") or {}
    with catalog.session(home) as con, catalog.transaction(con):
        catalog.delete_insert(con, "models", {"model_id": model_id}, [{
            "model_id": model_id,
            "model_name": ref.model_name,
            "pretrained": ref.pretrained,
            "checkpoint_sha256": sha,
            "objective": spec.get("objective"),
            "hopfield": spec.get("hopfield"),
            "logit_scale": meta.get("logit_scale"),
            "embed_dim": meta.get("embed_dim"),
            "train_meta": json.dumps(meta, sort_keys=True, default=str) if meta else None,
        }])
        catalog.delete_insert(con, "runs", {"run_id": run_id}, [{
            "run_id": run_id,
            "model_id": model_id,
            "dataset_id": dataset_id,
            "label": _label(ref, meta, dataset_id),
            "status": "embedding",
            "vectors_table": vectors.table_name(run_id),
            "vectors_normalized": False,
            "code_version": clipgeo.__version__,
        }])
    return RunPlan(run_id, model_id, dataset_id, ref, False, n_images, len(samples), plan_shards(samples, shard_images))


_MODELS: dict[tuple[str, str | None, str | None, str], object] = {}
_MODELS_LOCK = threading.Lock()


def cached_model(ref: ModelRef, device: str | None = None, precision: str = "auto"):
    """Load a model once per process (shards of a run share it; Dask workers keep theirs), in
    its inference precision (``auto``: fp16 weights on CUDA, fp32 on CPU; see
    :func:`clipgeo.embedding.precision.prepare_model`)."""
    from clipgeo.embedding.precision import prepare_model, resolve_precision
    from clipgeo.models.loader import default_device, load_model

    resolved = resolve_precision(precision, device or default_device())
    key = (ref.model_name, ref.pretrained, device, resolved)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = prepare_model(load_model(ref.model_name, ref.pretrained, device=device), resolved)
        return _MODELS[key]


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def embed_shard(home: DataHome, plan: RunPlan, shard: Shard, *, device: str | None = None,
                image_batch_size: int = 256, text_batch_size: int = 1024, progress: bool = True,
                num_workers: int | None = None, decode: str = "auto", precision: str = "auto") -> Path:
    """Embed one shard (skipped when its staging file exists) and write it atomically.

    An image that cannot be used (missing, truncated, not an image, too large, ...) although
    ingest accepted it is left out together with its captions: one reject row of this run
    (stage ``embed``, ``n_captions`` = its captions), written at commit time.
    ``num_workers`` (None: sized to the machine), ``decode`` (``auto`` / ``tensor`` /
    ``pil``) and ``precision`` (``auto`` / ``fp32`` / ``fp16`` / ``bf16``) are those of
    :func:`clipgeo.embedding.embed.embed_image_refs` and :func:`cached_model`. The shard's stage
    timings are kept with it; :func:`commit_run` logs the run's profile line.
    """
    from clipgeo.embedding.embed import embed_image_refs, embed_texts
    from clipgeo.embedding.image_path import EmbedProfile

    path = shard_file(home, plan.run_id, shard.index)
    if path.exists():
        return path
    lm = cached_model(plan.ref, device, precision)
    prof = EmbedProfile()
    img, ok, failures = embed_image_refs(lm, list(shard.image_refs), batch_size=image_batch_size, progress=progress,
                                         num_workers=num_workers, decode=decode, profile=prof)
    # one row per image this run could not use, with the captions it took along (sql/schema/010)
    rejects = [{"item_ref": shard.image_refs[i], "stage": "embed", "reason": reason, "sample_id": None,
                "image_id": shard.image_ids[i], "n_images": 1,
                "n_captions": shard.text_image_ids.count(shard.image_ids[i])} for i, _stage, reason in failures]
    bad_images = {shard.image_ids[i] for i, _, _ in failures}
    keep_txt = [k for k, iid in enumerate(shard.text_image_ids) if iid not in bad_images]
    t0 = time.perf_counter()
    txt = embed_texts(lm, [shard.captions[k] for k in keep_txt], batch_size=text_batch_size, progress=progress,
                      num_workers=num_workers)
    prof.texts, prof.text_seconds = len(keep_txt), time.perf_counter() - t0
    for name, mat in (("image", img), ("text", txt)):
        if not np.isfinite(mat).all():
            raise ValueError(f"run {plan.run_id} shard {shard.index}: the model produced NaN/inf {name} vectors")
    _atomic_savez(
        path,
        image_ids=np.array([i for i, good in zip(shard.image_ids, ok) if good], dtype=str).reshape(-1),
        images=img,
        sample_ids=np.array([shard.sample_ids[k] for k in keep_txt], dtype=str).reshape(-1),
        text_image_ids=np.array([shard.text_image_ids[k] for k in keep_txt], dtype=str).reshape(-1),
        texts=txt,
        meta=np.array(json.dumps({"device": str(lm.device), "logit_scale": float(lm.logit_scale),
                                  "embed_dim": int(lm.embed_dim), "rejects": rejects, "profile": prof.as_dict()})),
    )
    return path


def _shard_batches(run_id: str, files: Sequence[Path]) -> Iterator[pa.RecordBatch]:
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            yield from vectors.record_batches(
                run_id, image_ids=z["image_ids"].tolist(), images=z["images"], sample_ids=z["sample_ids"].tolist(),
                text_image_ids=z["text_image_ids"].tolist(), texts=z["texts"],
            )


def commit_run(home: DataHome, plan: RunPlan, *, seconds: float | None = None) -> RunPlan:
    """Stream every staged shard into the run's LanceDB table in one commit; mark it embedded."""
    files = [shard_file(home, plan.run_id, s.index) for s in plan.shards]
    try:
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise RuntimeError(f"run {plan.run_id}: cannot commit, shards not embedded: {', '.join(missing)}")
        n_images = n_texts = 0
        rejects: list[dict] = []
        from clipgeo.embedding.image_path import EmbedProfile

        profile = EmbedProfile()
        for f in files:
            with np.load(f, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                dim = int(z["images"].shape[1])
                n_images += z["image_ids"].shape[0]
                n_texts += z["sample_ids"].shape[0]
                rejects += meta.pop("rejects", [])
                if meta.get("profile"):
                    profile.add(EmbedProfile.from_dict(meta.pop("profile")))
        n = vectors.write_run_batches(home, plan.run_id, dim, _shard_batches(plan.run_id, files))
    except (RuntimeError, FileNotFoundError):
        # Another process embedding the same run may have committed it and cleared the
        # staging area under us: its table is then complete and ours is not needed.
        if _committed_elsewhere(home, plan):
            log.info("run %s was committed by another process meanwhile", plan.run_id)
            return plan
        raise
    counts = vectors.count_rows(home, plan.run_id)
    if counts.get("image", 0) != n_images or counts.get("text", 0) != n_texts:
        raise RuntimeError(f"run {plan.run_id}: committed {counts}, expected {n_images} images and {n_texts} texts")
    reject_rows = [{"dataset_id": plan.dataset_id, "run_id": plan.run_id, "item_ref": r["item_ref"], "stage": r["stage"],
                    "reason": r["reason"], "sample_id": r["sample_id"], "image_id": r.get("image_id"),
                    "n_images": r.get("n_images", 0), "n_captions": r.get("n_captions", 0)} for r in rejects]
    with catalog.session(home) as con, catalog.transaction(con):
        catalog.update_run(con, plan.run_id, status="embedded", n_images=n_images, n_texts=n_texts,
                           embed_seconds=seconds, device=meta["device"], error=None)
        catalog.delete_insert(con, "rejects", {"run_id": plan.run_id}, reject_rows)
        catalog.execute(con, "UPDATE models SET logit_scale = ?, embed_dim = ? WHERE model_id = ?",
                        [meta["logit_scale"], meta["embed_dim"], plan.model_id])
    shutil.rmtree(staging_dir(home, plan.run_id), ignore_errors=True)
    log.info("run %s: committed %d vectors (%d images, %d captions; %d rejects)", plan.run_id, n, n_images, n_texts,
             len(reject_rows))
    if profile.wall > 0:
        log.info("run %s: %s", plan.run_id, profile.line())
    return RunPlan(plan.run_id, plan.model_id, plan.dataset_id, plan.ref, False, n_images, n_texts, plan.shards,
                   seconds or 0.0)


def _committed_elsewhere(home: DataHome, plan: RunPlan) -> bool:
    with catalog.session(home) as con:
        found = catalog.execute(con, "SELECT status, n_images, n_texts FROM runs WHERE run_id = ?", [plan.run_id])
    if not found or found[0][0] not in ("embedded", "measured"):
        return False
    counts = vectors.count_rows(home, plan.run_id)
    return counts.get("image") == found[0][1] and counts.get("text") == found[0][2]


def mark_failed(home: DataHome, run_id: str, error: str) -> None:
    with catalog.session(home) as con:
        catalog.update_run(con, run_id, status="failed", error=error[:2000])


def embed_run(home: DataHome, ref: ModelRef, dataset_id: str, *, force: bool = False, device: str | None = None,
              shard_images: int = DEFAULT_SHARD_IMAGES, image_batch_size: int = 256, text_batch_size: int = 1024,
              progress: bool = True, num_workers: int | None = None, decode: str = "auto",
              precision: str = "auto") -> RunPlan:
    """Embed every image and caption of ``dataset_id`` with ``ref`` in-process (no orchestration).

    The flows fan the shards out as tasks instead; this is the same work, one shard after another.
    """
    plan = prepare_run(home, ref, dataset_id, force=force, shard_images=shard_images)
    if plan.cached:
        return plan
    t0 = time.perf_counter()
    try:
        for shard in plan.shards:
            embed_shard(home, plan, shard, device=device, image_batch_size=image_batch_size,
                        text_batch_size=text_batch_size, progress=progress, num_workers=num_workers, decode=decode,
                        precision=precision)
        return commit_run(home, plan, seconds=time.perf_counter() - t0)
    except BaseException as exc:
        mark_failed(home, plan.run_id, f"{type(exc).__name__}: {exc}")
        raise
