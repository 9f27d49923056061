"""Batched image / text embedding with any :class:`~clipgeo.models.loader.LoadedModel`.

Both functions return the **raw** encoder outputs (``normalize=False``): ``f(x)`` as float32
numpy arrays of shape ``(n, d)``, in input order. Geometry code decides itself whether and
when to project onto the unit sphere (``f(x) / ||f(x)||``), so norms are preserved here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from clipgeo.models.loader import LoadedModel

__all__ = ["embed_image_refs", "embed_images", "embed_texts"]


class _ImageFiles:
    """Map-style dataset: ``i -> (preprocess(load_image(refs[i])), i, None)``, or
    ``(None, i, (stage, reason))`` when the image cannot be used (see
    :func:`clipgeo.sources.images.load_image`: missing, truncated, not an image, too large...)."""

    def __init__(self, refs: Sequence[str], preprocess: Any, max_pixels: int) -> None:
        self.refs = list(refs)
        self.preprocess = preprocess
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> Any:
        from clipgeo.sources.images import ImageRejected, load_image

        try:
            return self.preprocess(load_image(self.refs[i], max_pixels=self.max_pixels)), i, None
        except ImageRejected as e:
            return None, i, (e.stage, e.reason)


def _collate(items: list[Any]) -> Any:
    import torch

    good = [(x, i) for x, i, _ in items if x is not None]
    bad = [(i, err) for x, i, err in items if x is None]
    batch = torch.stack([x for x, _ in good]) if good else None
    return batch, [i for _, i in good], bad


def _model_dtype(model: Any) -> Any:
    for p in model.parameters():
        return p.dtype
    import torch

    return torch.float32


def embed_image_refs(
    lm: LoadedModel,
    refs: Sequence[str],
    *,
    batch_size: int = 256,
    progress: bool = True,
    num_workers: int = 0,
    max_pixels: int = 100_000_000,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str, str]]]:
    """Raw image embeddings ``model.encode_image(preprocess(image), normalize=False)``, tolerant of bad images.

    Images are read with :func:`clipgeo.sources.images.load_image` (plain paths or
    ``tar://`` members; EXIF orientation applied; CMYK, 16-bit, palette and alpha images
    converted to RGB; decompression bombs above ``max_pixels`` refused), transformed by
    ``lm.preprocess``, batched by a ``torch.utils.data.DataLoader`` (``num_workers`` worker
    processes; 0 = in-process, the sensible choice on CPU) and encoded under
    ``torch.inference_mode()`` on ``lm.device``.

    Returns:
        ``(vectors, ok, failures)``: float32 ``(ok.sum(), d)`` rows for the usable images in
        input order, a boolean mask over ``refs``, and ``(index, stage, reason)`` for each
        image that could not be used.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ok = np.zeros(len(refs), dtype=bool)
    if len(refs) == 0:
        return np.zeros((0, lm.embed_dim), dtype=np.float32), ok, []
    loader = DataLoader(
        _ImageFiles(refs, lm.preprocess, max_pixels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=str(lm.device).startswith("cuda"),
    )
    dtype = _model_dtype(lm.model)
    out: list[np.ndarray] = []
    failures: list[tuple[int, str, str]] = []
    with torch.inference_mode():
        for x, idx, bad in tqdm(loader, desc="embed images", unit="batch", disable=not progress):
            failures += [(i, stage, reason) for i, (stage, reason) in bad]
            if x is None:
                continue
            ok[idx] = True
            x = x.to(lm.device, dtype=dtype, non_blocking=True)
            out.append(lm.model.encode_image(x, normalize=False).float().cpu().numpy())
    vecs = np.concatenate(out) if out else np.zeros((0, lm.embed_dim), dtype=np.float32)
    return np.ascontiguousarray(vecs, dtype=np.float32), ok, failures


def embed_images(
    lm: LoadedModel,
    paths: Sequence[str],
    *,
    batch_size: int = 256,
    progress: bool = True,
    num_workers: int = 0,
) -> np.ndarray:
    """Raw image embeddings of every image, row ``i`` for ``paths[i]``; ``(0, d)`` for empty input.

    Strict form of :func:`embed_image_refs`: an unusable image raises ``ValueError`` naming it.
    """
    vecs, ok, failures = embed_image_refs(lm, paths, batch_size=batch_size, progress=progress, num_workers=num_workers)
    if failures:
        i, stage, reason = failures[0]
        raise ValueError(f"image {paths[i]}: {reason} ({stage}); {len(failures)} unusable images in all")
    return vecs


def embed_texts(
    lm: LoadedModel,
    captions: Sequence[str],
    *,
    batch_size: int = 1024,
    progress: bool = True,
) -> np.ndarray:
    """Raw text embeddings ``model.encode_text(tokenizer(captions), normalize=False)``.

    Captions are tokenised with ``lm.tokenizer`` (truncated to the model's context length)
    batch by batch and encoded under ``torch.inference_mode()`` on ``lm.device``.

    Returns:
        float32 array ``(len(captions), lm.embed_dim)``, row ``i`` for ``captions[i]``;
        ``(0, d)`` for empty input.
    """
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(captions, str):
        raise TypeError("captions must be a sequence of strings, not a single string")
    captions = list(captions)
    if not captions:
        return np.zeros((0, lm.embed_dim), dtype=np.float32)
    out: list[np.ndarray] = []
    starts = range(0, len(captions), batch_size)
    with torch.inference_mode():
        for s in tqdm(starts, desc="embed texts", unit="batch", disable=not progress):
            tokens = lm.tokenizer(captions[s : s + batch_size]).to(lm.device)
            out.append(lm.model.encode_text(tokens, normalize=False).float().cpu().numpy())
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)
