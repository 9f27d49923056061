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

__all__ = ["embed_images", "embed_texts"]


class _ImageFiles:
    """Map-style dataset: ``i -> preprocess(PIL.Image.open(paths[i]).convert("RGB"))``."""

    def __init__(self, paths: Sequence[str], preprocess: Any) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        path = self.paths[i]
        try:
            with Image.open(path) as im:
                return self.preprocess(im.convert("RGB"))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"image not found: {path}") from e


def _model_dtype(model: Any) -> Any:
    for p in model.parameters():
        return p.dtype
    import torch

    return torch.float32


def embed_images(
    lm: LoadedModel,
    paths: Sequence[str],
    *,
    batch_size: int = 256,
    progress: bool = True,
    num_workers: int = 0,
) -> np.ndarray:
    """Raw image embeddings ``model.encode_image(preprocess(image), normalize=False)``.

    Images are decoded with PIL, converted to RGB, transformed by ``lm.preprocess`` and
    batched by a ``torch.utils.data.DataLoader`` (``num_workers`` worker processes; 0 =
    in-process, the sensible choice on CPU) and encoded under ``torch.inference_mode()`` on
    ``lm.device``.

    Returns:
        float32 array ``(len(paths), lm.embed_dim)``, row ``i`` for ``paths[i]``; ``(0, d)``
        for empty input.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(paths) == 0:
        return np.zeros((0, lm.embed_dim), dtype=np.float32)
    loader = DataLoader(
        _ImageFiles(paths, lm.preprocess),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=str(lm.device).startswith("cuda"),
    )
    dtype = _model_dtype(lm.model)
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for x in tqdm(loader, desc="embed images", unit="batch", disable=not progress):
            x = x.to(lm.device, dtype=dtype, non_blocking=True)
            out.append(lm.model.encode_image(x, normalize=False).float().cpu().numpy())
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


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
