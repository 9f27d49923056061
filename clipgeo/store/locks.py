"""Run-level exclusion: one holder at a time per unit of work, through file locks in the data home.

:func:`claim` takes an exclusive ``flock`` on ``<home>/locks/<unit>.lock`` (training a spec,
embedding or measuring a run, generating a dataset). A second process that wants the same
unit waits until the first is done, then finds the result in the store and reuses it, instead
of doing the work again or reading it half-written.

The lease of a holder that dies (``kill -9``, a crash, a lost container) ends with it: the
kernel drops a process's ``flock`` locks when its last file descriptor closes, so no stale
lock survives its owner and nothing must be cleaned up by hand. The lock file holds the
holder's pid, host and start time, for the message of a waiting process. Locks are advisory
and per open file, so two threads of one process exclude each other too. On NFS (v4) Linux
maps ``flock`` onto byte-range locks that the server releases when the client's lease lapses.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from clipgeo.core.config import DataHome

log = logging.getLogger(__name__)

WAIT_SECONDS = 6 * 3600.0  # a unit (training, embedding a big dataset) may take hours


class LockTimeout(TimeoutError):
    """Waited longer than allowed for another holder of a unit."""


def lock_path(home: DataHome, unit: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.=+-]", "_", unit)
    return home.root / "locks" / f"{safe}.lock"


def holder(path: Path) -> dict:
    """What the current (or last) holder wrote into the lock file; {} when unreadable."""
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


@contextlib.contextmanager
def claim(home: DataHome, unit: str, *, wait_seconds: float = WAIT_SECONDS, poll: float = 0.25,
          on_wait: Callable[[dict], None] | None = None) -> Iterator[bool]:
    """Hold ``unit`` exclusively for the block. Yields True when another holder had to be waited for.

    ``on_wait`` is called once with the holder's details when the unit is busy.
    Raises :class:`LockTimeout` after ``wait_seconds``.
    """
    path = lock_path(home, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    waited = False
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if not waited:
                waited = True
                info = holder(path)
                log.info("%s is held by pid %s on %s since %s: waiting", unit, info.get("pid"), info.get("host"),
                         info.get("since"))
                if on_wait:
                    on_wait(info)
            if time.monotonic() > deadline:
                info = holder(path)
                raise LockTimeout(f"{unit}: still held by pid {info.get('pid')} on {info.get('host')} after "
                                  f"{wait_seconds:.0f} s (lock file {path}); is that process stuck?")
            time.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"unit": unit, "pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode(), 0)
        yield waited
    finally:
        os.close(fd)  # closing the descriptor releases the lock
