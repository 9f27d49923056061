"""Scratch folders in a data home for rows too many to hold in memory.

Millions of rows (per-sample statistics, an imported release's samples) are written batch by
batch to Parquet parts under ``<home>/tmp/<prefix>-<pid>-<uid>/`` and moved into DuckDB inside
the stage's transaction (:class:`clipgeo.store.catalog.ParquetRows`); the folder is removed when
the stage ends. A folder left by a process that died (a crash, ``kill -9``) is removed by the
next stage of the same prefix: its pid is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from clipgeo.core.config import DataHome


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scratch_dir(home: DataHome, prefix: str) -> Path:
    """A fresh folder ``<home>/tmp/<prefix>-<pid>-<uid>``; earlier ones of the same prefix whose
    process is gone are removed first. The caller removes it (or use :func:`scratch`)."""
    root = home.root / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f"{prefix}-*"):
        try:
            pid = int(old.name[len(prefix) + 1:].split("-")[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    path = root / f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


@contextlib.contextmanager
def scratch(home: DataHome, prefix: str) -> Iterator[Path]:
    """:func:`scratch_dir` for the block, removed afterwards (also on error)."""
    path = scratch_dir(home, prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
