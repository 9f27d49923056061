"""The embed stage's DataLoader worker processes: how many (sized to the machine's cores and the
memory each decode worker needs, :data:`WORKER_MEMORY_BYTES`) and how they start.

How DataLoader workers are started: never by forking a process that holds thread pools.

By the time images are embedded, the process has usually loaded LanceDB and Arrow (their
Rust/C++ runtimes keep thread pools) and torch (its OpenMP pool). ``fork`` copies such a
process with its locks in whatever state its other threads left them, which can deadlock the
child — LanceDB says so itself ("fork support is experimental ... small chance of deadlock").
Workers are therefore started with the ``forkserver`` method: a clean server process, started
fresh (not forked) the first time workers are needed, imports torch and the embedding modules
once (:data:`PRELOAD`) and forks each worker from itself, so starting a worker stays cheap and
nothing is copied from the busy parent. ``CLIPGEO_WORKER_START`` (``forkserver``, ``spawn`` or
``fork``) overrides it, e.g. to measure the difference (``benchmarks/bench_embed.py``).
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

__all__ = ["PRELOAD", "START_METHODS", "WORKER_MEMORY_BYTES", "default_num_workers", "resolve_num_workers",
           "start_method", "worker_context"]

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


START_METHODS = ("forkserver", "spawn", "fork")
#: Imported once by the fork server, so each worker starts without importing them again.
PRELOAD = ["torch", "torch.utils.data", "PIL.Image", "clipgeo.embedding.preprocess", "clipgeo.embedding.image_path",
           "clipgeo.embedding.embed", "open_clip"]


def start_method() -> str:
    """``$CLIPGEO_WORKER_START`` if set (one of :data:`START_METHODS`), else ``forkserver``.

    Examples
    --------
    >>> start_method() in START_METHODS
    True
    """
    method = os.environ.get("CLIPGEO_WORKER_START", "").strip() or "forkserver"
    if method not in START_METHODS:
        raise ValueError(f"CLIPGEO_WORKER_START={method!r}: expected one of {', '.join(START_METHODS)}")
    return method


def worker_context() -> Any:
    """The multiprocessing context DataLoader workers start in (``multiprocessing_context=``):
    :func:`start_method`'s, the fork server preloading :data:`PRELOAD`."""
    method = start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx
