"""Embed stage: one model over one registered dataset, raw vectors into LanceDB.

A run's id is a hash of what determines its vectors (model identity incl. checkpoint
hash, dataset id, embedding code version), so re-running the same job finds its run
already embedded and skips it; ``force=True`` re-embeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path


import clipgeo
from clipgeo.config import DataHome
from clipgeo.stages.ingest import load_samples
from clipgeo.store import catalog, vectors

log = logging.getLogger(__name__)

# Bumped when the embedding path changes what vectors come out (preprocessing, dtype, ...).
EMBED_VERSION = "1"


@dataclass(frozen=True)
class ModelRef:
    """How a user names a model: an open_clip architecture plus a pretrained tag or checkpoint path."""

    model_name: str
    pretrained: str | None = None

    def checkpoint_path(self) -> Path | None:
        if self.pretrained and (("/" in self.pretrained) or self.pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))):
            return Path(self.pretrained).expanduser().resolve()
        return None


@dataclass(frozen=True)
class EmbedResult:
    run_id: str
    model_id: str
    dataset_id: str
    cached: bool
    n_images: int
    n_texts: int
    seconds: float


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_meta(path: Path) -> dict:
    """The sidecar metadata clipgeo's trainer writes next to a checkpoint ({} for foreign ones)."""
    side = path.with_suffix(".json")
    if side.exists():
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError:
            log.warning("ignoring unreadable checkpoint sidecar %s", side)
    return {}


def model_identity(ref: ModelRef) -> tuple[str, str | None, dict]:
    """(model_id, checkpoint sha256 or None, sidecar meta) without loading the model."""
    ckpt = ref.checkpoint_path()
    if ckpt is not None:
        if not ckpt.exists():
            raise FileNotFoundError(f"checkpoint {ckpt} (model {ref.model_name}) does not exist")
        sha = file_sha256(ckpt)
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
        return f"{ref.model_name} [{kind}] on {dataset_id}"
    return f"{ref.model_name} ({ref.pretrained or 'random init'}) on {dataset_id}"


def embed_run(
    home: DataHome,
    ref: ModelRef,
    dataset_id: str,
    *,
    force: bool = False,
    device: str | None = None,
    image_batch_size: int = 256,
    text_batch_size: int = 1024,
    progress: bool = True,
) -> EmbedResult:
    """Embed every image and caption of ``dataset_id`` with ``ref``; skip when already done."""
    from clipgeo.embed import embed_images, embed_texts  # torch/open_clip only when needed
    from clipgeo.models.loader import load_model

    model_id, sha, meta = model_identity(ref)
    run_id = run_id_for(model_id, dataset_id)
    samples = load_samples(home, dataset_id)
    images: dict[str, str] = {}
    for s in samples:
        images.setdefault(s.image_id, s.image_ref)
    image_ids = sorted(images)

    with catalog.session(home) as con:
        found = catalog.execute(con, "SELECT status, n_images, n_texts, embed_seconds FROM runs WHERE run_id = ?", [run_id])
    row = found[0] if found else None
    if row and not force and row[0] in ("embedded", "measured"):
        counts = vectors.count_rows(home, run_id)
        if counts.get("image") == len(image_ids) == row[1] and counts.get("text") == len(samples) == row[2]:
            log.info("run %s already embedded (%d images, %d captions): skipped", run_id, row[1], row[2])
            return EmbedResult(run_id, model_id, dataset_id, True, row[1], row[2], row[3] or 0.0)

    lm = load_model(ref.model_name, ref.pretrained, device=device)
    spec = meta.get("spec") or {}
    with catalog.session(home) as con, catalog.transaction(con):
        catalog.delete_insert(
            con,
            "models",
            {"model_id": model_id},
            [
                {
                    "model_id": model_id,
                    "model_name": ref.model_name,
                    "pretrained": ref.pretrained,
                    "checkpoint_sha256": sha,
                    "objective": spec.get("objective"),
                    "hopfield": spec.get("hopfield"),
                    "logit_scale": float(lm.logit_scale),
                    "embed_dim": int(lm.embed_dim),
                    "train_meta": json.dumps(meta, sort_keys=True, default=str) if meta else None,
                }
            ],
        )
        catalog.delete_insert(
            con,
            "runs",
            {"run_id": run_id},
            [
                {
                    "run_id": run_id,
                    "model_id": model_id,
                    "dataset_id": dataset_id,
                    "label": _label(ref, meta, dataset_id),
                    "status": "embedding",
                    "vectors_table": vectors.table_name(run_id),
                    "vectors_normalized": False,
                    "device": lm.device,
                    "code_version": clipgeo.__version__,
                }
            ],
        )
    t0 = time.perf_counter()
    try:
        img = embed_images(lm, [images[i] for i in image_ids], batch_size=image_batch_size, progress=progress)
        txt = embed_texts(lm, [s.caption for s in samples], batch_size=text_batch_size, progress=progress)
        vectors.write_run(
            home,
            run_id,
            image_ids=image_ids,
            images=img,
            sample_ids=[s.sample_id for s in samples],
            text_image_ids=[s.image_id for s in samples],
            texts=txt,
        )
    except BaseException as exc:
        with catalog.session(home) as con:
            catalog.update_run(con, run_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    seconds = time.perf_counter() - t0
    with catalog.session(home) as con:
        catalog.update_run(
            con, run_id, status="embedded", n_images=len(image_ids), n_texts=len(samples), embed_seconds=seconds, error=None
        )
    log.info("run %s: embedded %d images and %d captions in %.1f s", run_id, len(image_ids), len(samples), seconds)
    return EmbedResult(run_id, model_id, dataset_id, False, len(image_ids), len(samples), seconds)


