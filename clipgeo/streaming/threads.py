"""BLAS products side by side, and a reader thread beside the arithmetic.

* :class:`Lanes` — independent BLAS products side by side: one Python thread per lane (the two
  modalities of a pass, the halves of a block), each product on ``cores // lanes`` BLAS threads
  (one on 2 cores). A single product on 2 OpenBLAS threads stalls whenever another thread of the
  process (the reader, the UMAP layout) takes one of the cores: its threads meet at barriers and
  spin while they wait. Two single-threaded products do not wait on each other, and a lane that
  waits for its next block sleeps, so the reader and the layout get the core it leaves
  (measured on the 1M × 768 moment pass: README, issue 27).
* :func:`prefetch` — runs an iterator (a Lance scan and its float16 → float64 decode) in a
  background thread, ``depth`` items ahead, so reading and decoding overlap the accumulation
  (numpy and Lance release the GIL in both). Exceptions reach the consumer; a consumer that
  stops early stops the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from clipgeo.core.config import threads_env, usable_cores

__all__ = ["Lanes", "prefetch"]

T = TypeVar("T")
_DONE = object()


class Lanes:
    """Run independent BLAS products side by side, one Python thread per lane.

    >>> with Lanes(2) as lanes:
    ...     lanes.map(lambda k: k * k, range(3))
    [0, 1, 4]

    Each product runs on ``per_lane = max(1, threads // lanes)`` BLAS threads, where ``threads``
    is ``$CLIPGEO_THREADS`` (or ``$OPENBLAS_NUM_THREADS``, ``$OMP_NUM_THREADS``) or the usable
    cores, and there are at most ``threads`` lanes (one on a 1-core machine); the BLAS pool's
    count is set on entry and restored by :meth:`close` (also on ``with`` exit). Results do not depend on the lanes: each product is the one the caller would have
    run, in the order the caller submitted it per accumulator.
    """

    def __init__(self, lanes: int = 2) -> None:
        from concurrent.futures import ThreadPoolExecutor

        fixed = threads_env("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
        total = fixed if fixed is not None else usable_cores()
        self.lanes = max(1, min(int(lanes), total))   # never more lanes than the threads allowed
        self.per_lane = max(1, total // self.lanes)
        self._pool = None
        self._before: list[int] = []
        try:
            from threadpoolctl import ThreadpoolController

            self._pool = ThreadpoolController().select(user_api="blas")
            self._before = [lc.num_threads for lc in self._pool.lib_controllers]
            for lc in self._pool.lib_controllers:
                lc.set_num_threads(self.per_lane)
        except Exception:  # noqa: BLE001 - no threadpoolctl / no BLAS found: run with what there is
            self._pool = None
        self._exec = ThreadPoolExecutor(self.lanes, thread_name_prefix="clipgeo-lane")

    def map(self, fn: Callable[..., T], items: Iterable) -> list[T]:
        """``[fn(item) for item in items]``, the items spread over the lanes; in order. Returns (or
        raises the first item's error) only once every item has finished, so the caller may reuse
        or refill whatever buffers the items read (the streamed passes' rings)."""
        from concurrent.futures import wait

        futures = [self._exec.submit(fn, item) for item in items]
        wait(futures)
        return [f.result() for f in futures]

    def summary(self) -> str:
        """``"2 lanes x 1 BLAS thread"``."""
        return f"{self.lanes} lane{'s' if self.lanes > 1 else ''} x {self.per_lane} BLAS thread{'s' if self.per_lane > 1 else ''}"

    def close(self) -> None:
        self._exec.shutdown(wait=True)
        if self._pool is not None:
            for lc, n in zip(self._pool.lib_controllers, self._before):
                lc.set_num_threads(n)
            self._pool = None

    def __enter__(self) -> "Lanes":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    >>> list(prefetch(iter(range(5))))
    [0, 1, 2, 3, 4]

    Memory: ``depth + 1`` items at most (the one being produced, the queue, none kept after
    the consumer takes it). An exception in the producer is raised in the consumer.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)

    th = threading.Thread(target=produce, name="clipgeo-prefetch", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        th.join(timeout=5)
