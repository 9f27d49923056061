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

__all__ = ["release_memory", "rss_mb"]

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
