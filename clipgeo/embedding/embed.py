"""Batched image / text embedding with any :class:`~clipgeo.models.loader.LoadedModel`.

Both functions return the **raw** encoder outputs (``normalize=False``): ``f(x)`` as float32
numpy arrays of shape ``(n, d)``, in input order. Geometry code decides itself whether and
when to project onto the unit sphere (``f(x) / ||f(x)||``), so norms are preserved here.

Images take one of two paths (``decode=``):

* ``"tensor"`` (what ``"auto"`` picks when the model's preprocess is a standard open_clip
  validation transform): :mod:`clipgeo.embedding.image_path`, batched JPEG decoding (libjpeg-turbo in
  workers on CPU, nvjpeg on CUDA) and :mod:`clipgeo.embedding.preprocess`'s batched resize / crop /
  normalise, which reproduces open_clip's transform within one level of 255 per pixel;
* ``"pil"``: the reference, ``lm.preprocess`` on each Pillow image.

Both read and decode in DataLoader workers sized to the machine by default
(``num_workers=None``; 0 = in the main process; on CPU the fast path's workers may be one
decode thread of this process, see :mod:`clipgeo.embedding.workers`) and reject the same bad
images with the same reasons.
The model's dtype (see :func:`clipgeo.embedding.precision.prepare_model`) sets the inputs'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from clipgeo.models.loader import LoadedModel

__all__ = ["DECODE_PATHS", "embed_image_refs", "embed_images", "embed_texts"]

DECODE_PATHS = ("auto", "tensor", "pil")


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


def embed_image_refs(
    lm: LoadedModel,
    refs: Sequence[str],
    *,
    batch_size: int = 256,
    progress: bool = True,
    num_workers: int | None = None,
    max_pixels: int = 100_000_000,
    decode: str = "auto",
    overlap: bool = True,
    profile: Any = None,
    sink: Any = None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str, str]]]:
    """Raw image embeddings ``model.encode_image(preprocess(image), normalize=False)``, tolerant of bad images.

    Images are read with :func:`clipgeo.sources.images.read_image_bytes` (plain paths or
    ``tar://`` members) and decoded as :func:`clipgeo.sources.images.load_image` does
    (EXIF orientation applied; CMYK, 16-bit, palette and alpha images converted to RGB;
    decompression bombs above ``max_pixels`` refused), preprocessed, batched by a
    ``torch.utils.data.DataLoader`` and encoded under ``torch.inference_mode()`` on
    ``lm.device``.

    Args:
        num_workers: DataLoader worker processes; None = sized to the machine (cores - 1,
            capped by memory; 0 for a single batch), 0 = in the main process. On the fast
            path on CPU, one worker (or a small job while the fork server is not running)
            is one decode thread of this process instead
            (:func:`clipgeo.embedding.workers.decode_in_thread`).
        decode: ``"auto"`` (the tensor fast path when the model's preprocess allows it, else
            Pillow), ``"tensor"`` (fast path or ``ValueError``), ``"pil"`` (the reference).
        overlap: fast path on CUDA: prepare the next batch while the current one encodes.
        profile: a :class:`clipgeo.embedding.image_path.EmbedProfile` to fill with stage timings.
        sink: called with ``(indices, rows)`` per batch as its vectors arrive (fast path).

    Returns:
        ``(vectors, ok, failures)``: float32 ``(ok.sum(), d)`` rows for the usable images in
        input order, a boolean mask over ``refs``, and ``(index, stage, reason)`` for each
        image that could not be used.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from clipgeo.embedding.image_path import EmbedProfile, embed_image_refs_fast
    from clipgeo.embedding.precision import model_dtype
    from clipgeo.embedding.workers import resolve_num_workers, worker_context
    from clipgeo.embedding.preprocess import spec_from_transform

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if decode not in DECODE_PATHS:
        raise ValueError(f"decode {decode!r}: expected one of {', '.join(DECODE_PATHS)}")
    spec = spec_from_transform(lm.preprocess) if decode != "pil" else None
    if decode == "tensor" and spec is None:
        raise ValueError(f"decode='tensor': the preprocess of {lm.model_name} ({lm.preprocess!r}) is not one the "
                         "tensor path reproduces; use decode='pil' or 'auto'")
    if spec is not None:
        return embed_image_refs_fast(lm, refs, batch_size=batch_size, num_workers=num_workers, max_pixels=max_pixels,
                                     progress=progress, overlap=overlap, spec=spec, profile=profile, sink=sink)
    ok = np.zeros(len(refs), dtype=bool)
    if len(refs) == 0:
        return np.zeros((0, lm.embed_dim), dtype=np.float32), ok, []
    import time

    t_start = time.perf_counter()
    prof = profile if profile is not None else EmbedProfile()
    workers = resolve_num_workers(num_workers, -(-len(refs) // batch_size))
    loader = DataLoader(
        _ImageFiles(refs, lm.preprocess, max_pixels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=str(lm.device).startswith("cuda"),
        multiprocessing_context=worker_context() if workers else None,  # not fork (clipgeo.embedding.workers)
    )
    dtype = model_dtype(lm.model)
    out: list[np.ndarray] = []
    failures: list[tuple[int, str, str]] = []
    with torch.inference_mode():
        it = iter(tqdm(loader, desc="embed images", unit="batch", disable=not progress))
        while True:
            t0 = time.perf_counter()
            try:
                x, idx, bad = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            prof.input_wait += t1 - t0
            failures += [(i, stage, reason) for i, (stage, reason) in bad]
            if x is None:
                continue
            ok[idx] = True
            x = x.to(lm.device, dtype=dtype, non_blocking=True)
            out.append(lm.model.encode_image(x, normalize=False).float().cpu().numpy())
            if sink is not None:
                sink(np.asarray(idx), out[-1])
            prof.encode += time.perf_counter() - t1
    vecs = np.concatenate(out) if out else np.zeros((0, lm.embed_dim), dtype=np.float32)
    prof.workers, prof.device, prof.precision = workers, str(lm.device), str(dtype).removeprefix("torch.")
    prof.images += int(ok.sum())
    prof.rejects += len(failures)
    prof.wall += time.perf_counter() - t_start
    return np.ascontiguousarray(vecs, dtype=np.float32), ok, failures


def embed_images(
    lm: LoadedModel,
    paths: Sequence[str],
    *,
    batch_size: int = 256,
    progress: bool = True,
    num_workers: int | None = None,
    decode: str = "auto",
) -> np.ndarray:
    """Raw image embeddings of every image, row ``i`` for ``paths[i]``; ``(0, d)`` for empty input.

    Strict form of :func:`embed_image_refs`: an unusable image raises ``ValueError`` naming it.
    """
    vecs, ok, failures = embed_image_refs(lm, paths, batch_size=batch_size, progress=progress, num_workers=num_workers,
                                          decode=decode)
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
    num_workers: int | None = None,
) -> np.ndarray:
    """Raw text embeddings ``model.encode_text(tokenizer(captions), normalize=False)``.

    Captions are tokenised with ``lm.tokenizer`` (truncated to the model's context length)
    batch by batch, in ``num_workers`` DataLoader workers (None = sized to the machine, 0 for
    a single batch; 0 = in the main process), and encoded under ``torch.inference_mode()``
    on ``lm.device``; on CUDA the next batch's tokens are copied (pinned, non-blocking)
    while the current one encodes.

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
    from clipgeo.embedding.text_batches import token_batches
    from clipgeo.embedding.workers import resolve_num_workers

    n_batches = -(-len(captions) // batch_size)
    cuda = str(lm.device).startswith("cuda")
    batches = token_batches(captions, lm.tokenizer, batch_size, resolve_num_workers(num_workers, n_batches), cuda)
    out: list[Any] = []
    with torch.inference_mode():
        for tokens in tqdm(batches, total=n_batches, desc="embed texts", unit="batch", disable=not progress):
            y = lm.model.encode_text(tokens.to(lm.device, non_blocking=True), normalize=False).float()
            out.append(y if cuda else y.numpy())
        if cuda:  # one copy back at the end: no sync between batches
            out = [torch.cat(out).cpu().numpy()]
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)
