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

The fork server's own start is not cheap: a fresh interpreter imports torch, torchvision and
open_clip, 3.4-4.5 CPU s on the 2-core machine of issue 33, paid by the first call of a process
that starts workers, while one core decodes and preprocesses a 640x480 JPEG in about 2.5 ms.
So the CPU fast path decodes on **one thread of this process** (beside the main thread's
encode, as one worker process would: the decoder and torch's kernels release the GIL) when
:func:`decode_in_thread` says so: one decode worker (a 2-core machine), or a small job
(fewer than :data:`THREADS_BELOW_IMAGES` images) while the fork server is not running yet.
Nothing is forked or started then. Larger jobs with several workers, the reference (Pillow)
path, the caption batches and the CUDA path keep worker processes from the fork server.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

__all__ = ["PRELOAD", "START_METHODS", "THREADS_BELOW_IMAGES", "WORKER_MEMORY_BYTES", "decode_in_thread",
           "default_num_workers", "fork_server_started", "resolve_num_workers", "start_method", "worker_context"]

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
    global _server_started
    method = start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
        _server_started = True  # the loader about to use it starts the server (once per process)
    return ctx


#: Fewer images than this in one CPU call decode on one thread of this process even when
#: several workers are allowed, unless the fork server is already running: its start (3.4-4.5
#: CPU s) is the decode of 1,400-1,800 images on one core (2.5 ms each), and several worker
#: processes only gain back (1 - 1/workers) of the decode time.
THREADS_BELOW_IMAGES = 2048

_server_started = False


def fork_server_started() -> bool:
    """Whether :func:`worker_context` has handed out the fork server's context in this process
    (its first loader starts the server, which then serves every later one)."""
    return _server_started


def decode_in_thread(n_images: int, workers: int) -> bool:
    """Whether the CPU fast path decodes ``n_images`` on one thread of this process instead of
    ``workers`` worker processes (see the module docstring).

    True for one worker, or for fewer than :data:`THREADS_BELOW_IMAGES` images while the fork
    server is not running; False for ``workers == 0`` (decoded in the main loop, no overlap)
    and whenever ``$CLIPGEO_WORKER_START`` names a start method (worker processes asked for).

    Examples
    --------
    >>> decode_in_thread(100, 0)  # num_workers=0: no thread, no process
    False
    """
    if workers < 1 or os.environ.get("CLIPGEO_WORKER_START", "").strip():
        return False
    return workers == 1 or (n_images < THREADS_BELOW_IMAGES and not fork_server_started())
