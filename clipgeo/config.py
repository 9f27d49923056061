"""Where clipgeo keeps its data, and the small settings every stage shares.

One setting moves everything: ``CLIPGEO_HOME`` (default ``./clipgeo-data`` under the
working directory). The data home holds the DuckDB catalog, the LanceDB folder,
generated datasets, checkpoints and reports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "CLIPGEO_HOME"
DEFAULT_HOME = "clipgeo-data"

# Bumped whenever a measurement's definition or a table's meaning changes, so stored
# results can say which code produced them and stale analyses can be found.
ANALYSIS_VERSION = "3"  # 2: double-ellipsoid suite; 3: topological suite

REPO_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = Path(os.environ.get("CLIPGEO_SQL_DIR", REPO_ROOT / "sql"))


THREADS_ENV = "CLIPGEO_THREADS"


def compute_threads() -> int:
    """Threads for torch and BLAS compute in training and measuring.

    ``$CLIPGEO_THREADS`` when set, else one less than the usable cores (at least 1): on a
    shared 2-core machine, 2 torch threads beside one other busy process spin at every
    barrier and training ran 8x slower than with 1 (benchmarks/bench_threads.py), while
    1 thread loses at most the one core it leaves to the orchestrator and other processes.
    """
    value = os.environ.get(THREADS_ENV)
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"{THREADS_ENV}={value!r}: expected a whole number of threads") from None
        if n < 1:
            raise ValueError(f"{THREADS_ENV}={value!r}: expected at least 1")
        return n
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


@dataclass(frozen=True)
class DataHome:
    """The folder layout of one data home."""

    root: Path

    @classmethod
    def resolve(cls, root: str | os.PathLike[str] | None = None) -> "DataHome":
        """The data home at ``root``, else ``$CLIPGEO_HOME``, else ``./clipgeo-data``."""
        chosen = root if root is not None else os.environ.get(HOME_ENV) or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.duckdb"

    @property
    def lance(self) -> Path:
        return self.root / "lance"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def ensure(self) -> "DataHome":
        for p in (self.root, self.lance, self.datasets, self.checkpoints, self.reports):
            p.mkdir(parents=True, exist_ok=True)
        return self
