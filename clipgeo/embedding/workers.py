"""Sizing the embed stage's worker processes to the machine: cores this process may use and the
memory each decode worker needs (:data:`WORKER_MEMORY_BYTES`)."""

from __future__ import annotations

import os

__all__ = ["WORKER_MEMORY_BYTES", "default_num_workers", "resolve_num_workers"]

#: Memory one decode worker may need: its share of torch (copy-on-write pages touched) plus
#: ``prefetch_factor`` batches of decoded 640x480 images (256 x 0.9 MB) in flight.
WORKER_MEMORY_BYTES = 1_500_000_000


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return None


def default_num_workers() -> int:
    """Decode workers for this machine: one per core but one (the main process encodes and
    feeds the device), capped by available memory at ``WORKER_MEMORY_BYTES`` each."""
    n = max(_cores() - 1, 1)
    mem = _available_memory()
    if mem is not None:
        n = min(n, max(mem // WORKER_MEMORY_BYTES, 0))
    return int(n)


def resolve_num_workers(num_workers: int | None, n_batches: int) -> int:
    """``num_workers`` as given (0 = in-process), or for None the machine's default, but 0
    for a single batch (a worker cannot overlap anything then, and costs its start-up)."""
    if num_workers is not None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0 = decode in the main process), got {num_workers}")
        return int(num_workers)
    if n_batches <= 1:
        return 0
    return min(default_num_workers(), n_batches)
