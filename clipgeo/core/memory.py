"""Process memory: hand freed memory back to the operating system between large steps.

A measurement runs sections one after another in one process. Each frees its arrays when it
ends, but glibc's allocator keeps freed heap pages (arrays under its dynamic mmap threshold, up
to 32 MiB, come from the heap) and Arrow's memory pool keeps freed buffers for reuse, so the
resident set left by one section sits under the next one's peak. :func:`release_memory` returns
both to the system; it changes no result.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

__all__ = ["bound_heap", "release_memory", "rss_mb"]

#: Allocations of this many bytes and more are served by ``mmap`` (see :func:`bound_heap`).
MMAP_THRESHOLD = 4 << 20
_M_MMAP_THRESHOLD = -3   # glibc's mallopt parameter numbers
_M_TRIM_THRESHOLD = -1
#: Free memory at the top of a heap kept for reuse (glibc's ``M_TRIM_THRESHOLD``, set with the
#: mmap threshold: see :func:`bound_heap`); :func:`release_memory` trims it between sections.
TRIM_THRESHOLD = 64 << 20
_BOUND: int | None = None

_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    return _LIBC


def bound_heap() -> int | None:
    """Serve allocations of 4 MiB and more by ``mmap`` from now on (glibc ``mallopt(M_MMAP_THRESHOLD)``),
    so that freeing them returns their pages to the system at once. Returns the threshold set,
    or None where nothing was changed.

    Why: Lance decodes batches on its own threads into buffers of a few MiB. Under glibc's
    default, whose threshold rises to 32 MiB, those buffers come from per-thread heaps, and the
    freed pages stay resident. The resident set then grows with the rows scanned. Measured on a
    1M × 768 run (two scans of both modalities): a filtered scan peaked at 0.72 GB by default
    and 0.36 GB with a 4 MiB threshold; the moment pass peaked at 1.60 GB and 1.22 GB, for 8%
    more wall time (page faults). The trim threshold is raised with it (to 64 MiB), as glibc
    otherwise fixes it at 128 KiB once the mmap threshold is set, and the streamed passes read
    batches of under 4 MiB (:data:`clipgeo.streaming.reader.BATCH_BYTES`): their buffers are then
    reused from the heap, not mapped and faulted in anew (a scan of 1M × 768 vectors: 6.7 → 1.2
    CPU s, peak unchanged). ``CLIPGEO_MMAP_THRESHOLD`` (bytes) changes the threshold, and
    ``0`` leaves the allocator alone. A ``MALLOC_MMAP_THRESHOLD_`` set in the environment
    wins: glibc has read it at start-up. Called where a run's table is opened for streaming
    (:class:`clipgeo.streaming.reader.LanceRun`: measurement, the per-range partials on Dask workers)
    and by the import; repeated calls do nothing.
    """
    global _BOUND
    if _BOUND is not None:
        return _BOUND or None
    raw = os.environ.get("CLIPGEO_MMAP_THRESHOLD", "").strip()
    try:
        threshold = int(raw) if raw else MMAP_THRESHOLD
    except ValueError:
        raise ValueError(f"CLIPGEO_MMAP_THRESHOLD={raw!r}: expected a number of bytes (0 leaves the allocator alone)") from None
    libc = _libc()
    opt = getattr(libc, "mallopt", None) if libc else None
    if threshold <= 0 or "MALLOC_MMAP_THRESHOLD_" in os.environ or opt is None:
        _BOUND = 0
        return None
    _BOUND = threshold if opt(_M_MMAP_THRESHOLD, threshold) == 1 else 0
    if _BOUND and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        # Setting the mmap threshold freezes glibc's trim threshold at 128 KiB: every free at the top
        # of a heap would hand the pages back, to be faulted in again by the next batch.
        opt(_M_TRIM_THRESHOLD, max(TRIM_THRESHOLD, 2 * threshold))
    return _BOUND or None


def release_memory() -> None:
    """Collect garbage, release Arrow's unused pooled memory and trim glibc's heap (``malloc_trim(0)``).
    A no-op where either is unavailable (not glibc, no pyarrow)."""
    gc.collect()
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except Exception:  # pragma: no cover - pyarrow missing or a pool without release
        pass
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc else None
    if trim is not None:
        trim(0)


def rss_mb() -> float | None:
    """This process's current resident set in MiB (Linux ``/proc/self/status``; None elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
