"""How DataLoader workers are started: never by forking a process that holds thread pools.

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

__all__ = ["PRELOAD", "START_METHODS", "start_method", "worker_context"]

START_METHODS = ("forkserver", "spawn", "fork")
#: Imported once by the fork server, so each worker starts without importing them again.
PRELOAD = ["torch", "torch.utils.data", "PIL.Image", "clipgeo.embedding.preprocess", "clipgeo.embedding.fastpath",
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
