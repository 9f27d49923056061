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
ANALYSIS_VERSION = "5"  # 2: double-ellipsoid suite; 3: topological suite; 4: reference definitions (issue 11);
#                        5: gap estimators, intrinsic dimension, bootstrap intervals (issue 25),
#                           cluster spectra in lambda on equal-size subsamples (issue 24)
#                           normalised-only runs measured on x/|x| throughout, exact cosine
#                           mean/std, gallery recall with ties (issue 27)

REPO_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = Path(os.environ.get("CLIPGEO_SQL_DIR", REPO_ROOT / "sql"))


THREADS_ENV = "CLIPGEO_THREADS"


def usable_cores() -> int:
    """The CPU cores this process may run on.

    Returns
    -------
    int
        The cores of its affinity mask (``os.sched_getaffinity``; ``os.cpu_count()`` where that
        does not exist), at least 1.

    Examples
    --------
    >>> usable_cores() >= 1
    True
    """
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_env(*fallbacks: str) -> int | None:
    """The thread count the environment fixes: ``$CLIPGEO_THREADS``, else the first of
    ``fallbacks`` that is set.

    Parameters
    ----------
    *fallbacks : str
        Further variables read in order when ``CLIPGEO_THREADS`` is unset or empty, e.g.
        ``"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"``.

    Returns
    -------
    int or None
        The count, or None when none of the variables is set.

    Raises
    ------
    ValueError
        Naming the variable, when its value is not a whole number >= 1.
    """
    name = next((n for n in (THREADS_ENV, *fallbacks) if os.environ.get(n)), None)
    if name is None:
        return None
    value = os.environ[name]
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a whole number of threads") from None
    if n < 1:
        raise ValueError(f"{name}={value!r}: expected at least 1")
    return n


def torch_threads() -> int:
    """torch intra-op threads for training: ``$CLIPGEO_THREADS`` (or ``$OMP_NUM_THREADS``), else every usable core when
    OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, which ``flows`` sets before
    torch loads), else one core fewer (at least 1).

    Measured on a shared 2-core machine beside one busy process (benchmarks/bench_threads.py):
    2 spinning threads trained 3-6x slower than 1 thread; 2 passive threads were faster than 1.
    """
    n = threads_env("OMP_NUM_THREADS")
    if n is not None:
        return n
    cores = usable_cores()
    return cores if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" else max(1, cores - 1)


def blas_threads() -> int:
    """BLAS threads for measuring: ``$CLIPGEO_THREADS`` (or ``$OPENBLAS_NUM_THREADS``,
    ``$OMP_NUM_THREADS``), else the count that ran a probe fastest on this machine now
    (:func:`measured_blas_threads`: every usable core on an idle machine, fewer beside busy
    processes). The streamed passes and the retrieval galleries do not use it: they run their
    products side by side on :class:`clipgeo.streaming.threads.Lanes`, one BLAS thread each on
    2 cores. (Until issue 27 this was always one less than the cores: measured beside one busy
    process, 2 spinning OpenBLAS threads on 2 cores were slower than 1, benchmarks/bench_threads.py;
    on an idle machine that left a core unused.)"""
    n = threads_env("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    return n if n is not None else measured_blas_threads()


_PROBED: dict[int, int] = {}


def nothing_else_runs(samples: int = 5, gap: float = 0.01, stat: str = "/proc/stat") -> bool:
    r"""True when every one of ``samples`` reads of the kernel's ``procs_running`` (``gap``
    seconds apart) counted only the reading thread: no other thread on the machine wanted a core.
    False when any read saw more, or there is no ``/proc/stat`` to read.

    Parameters
    ----------
    samples : int
        Reads of ``stat``.
    gap : float
        Seconds between two reads.
    stat : str
        The file to read (Linux's ``/proc/stat``).

    Returns
    -------
    bool
        Whether the machine looked idle in every read.

    Examples
    --------
    >>> import tempfile
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".stat", delete=False)
    >>> _ = f.write("cpu  1 2 3\nprocs_running 3\nprocs_blocked 0\n"); f.close()
    >>> nothing_else_runs(samples=2, gap=0.0, stat=f.name)
    False
    >>> nothing_else_runs(stat="/no/such/file")
    False
    """
    import time

    for i in range(samples):
        try:
            with open(stat) as f:
                running = next((int(ln.split()[1]) for ln in f if ln.startswith("procs_running")), None)
        except (OSError, ValueError, IndexError):
            return False
        if running is None or running > 1:
            return False
        if i + 1 < samples:
            time.sleep(gap)
    return True


def measured_blas_threads(rows: int = 4096, d: int = 768, reps: int = 5, margin: float = 0.85) -> int:
    """The BLAS thread count (1 … usable cores) that computed a ``rows × d`` float64 scatter
    ``XᵀX`` fastest (best of ``reps`` at each count, about 0.5 s in all: a smaller probe let one
    slow repetition pick 1 thread on an idle machine); more threads win only
    when at least ``1 − margin`` faster than the best fewer. Measured once per process.

    On a machine where nothing else runs (:func:`nothing_else_runs`, 50 ms) the probe is
    skipped: there every usable core is what it picks, and a notebook's first
    ``clipgeo.measure`` spent 0.4 s of its 10 s on it."""
    cores = usable_cores()
    if cores <= 1:
        return 1
    if cores in _PROBED:
        return _PROBED[cores]
    if nothing_else_runs():
        _PROBED[cores] = cores
        return cores
    import time

    import numpy as np
    from threadpoolctl import threadpool_limits

    x = np.random.default_rng(0).standard_normal((rows, d))
    best_n, best_t = 1, float("inf")
    for n in range(1, cores + 1):
        with threadpool_limits(n, user_api="blas"):
            x.T @ x   # warm the pool at this count
            t = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                x.T @ x
                t = min(t, time.perf_counter() - t0)
        if t < margin * best_t or best_t == float("inf"):
            best_n, best_t = n, t
    _PROBED[cores] = best_n
    return best_n


@dataclass(frozen=True)
class DataHome:
    """The folder layout of one data home.

    Everything a run produces lives under ``root``: the DuckDB catalog (``catalog.duckdb``), the
    LanceDB vectors (``lance/``), generated ``datasets/``, ``checkpoints/`` and ``reports/``.

    Parameters
    ----------
    root : Path
        The home's folder (absolute; :meth:`resolve` makes one from a path or the environment).

    Examples
    --------
    >>> import shutil, tempfile
    >>> home = DataHome.resolve(tempfile.mkdtemp())
    >>> home.catalog.name, home.lance.name
    ('catalog.duckdb', 'lance')
    >>> home.ensure().reports.is_dir()
    True
    >>> DataHome.resolve(home) is home
    True
    >>> shutil.rmtree(home.root)
    """

    root: Path

    @classmethod
    def resolve(cls, root: "str | os.PathLike[str] | DataHome | None" = None) -> "DataHome":
        """The data home at ``root`` (a DataHome is returned as is), else ``$CLIPGEO_HOME``, else
        ``./clipgeo-data``."""
        if isinstance(root, DataHome):
            return root
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
