"""Caption batches for the text encoder: tokenised in order, in DataLoader worker processes or
in this one. Heavy imports (torch) stay inside the functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["token_batches"]


class _CaptionBatches:
    """Map-style dataset of caption batches: ``k -> tokenizer(captions[k*b:(k+1)*b])``."""

    def __init__(self, captions: Sequence[str], tokenizer: Any, batch_size: int) -> None:
        self.captions, self.tokenizer, self.batch_size = list(captions), tokenizer, batch_size

    def __len__(self) -> int:
        return -(-len(self.captions) // self.batch_size)

    def __getitem__(self, k: int) -> Any:
        return self.tokenizer(self.captions[k * self.batch_size: (k + 1) * self.batch_size])


def token_batches(captions: Sequence[str], tokenizer: Any, batch_size: int, num_workers: int, pin: bool):
    """Token batches in order, tokenised in ``num_workers`` worker processes (0 = here)."""
    from torch.utils.data import DataLoader

    ds = _CaptionBatches(captions, tokenizer, batch_size)
    if num_workers == 0:
        return (ds[k] for k in range(len(ds)))
    return DataLoader(ds, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin, prefetch_factor=4)
