"""Shared fixtures. Prefect runs against a temporary test server (one per session); the tests of
served deployments share one real local ``prefect server start`` (one per session, too); three
main jobs started at once on one home run once per session for the tests that read them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("LANCEDB_LOG", "error")

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "flows.cli"]


#: Test files that mostly wait (on a real Prefect server's schedule, on subprocesses that each
#: start a temporary server, on three pipelines at once), longest first: `make test` runs on two
#: workers (pytest-xdist, ``--dist loadgroup``), and starting these first lets the CPU-bound
#: files fill the other worker meanwhile instead of one of them running alone at the end.
SLOW_FIRST = ("test_track_served.py", "test_operations.py", "test_embed_workers.py", "test_deployments.py",
              "test_track.py", "test_pipeline_flow.py", "test_api.py")


def pytest_collection_modifyitems(config, items):
    """Order :data:`SLOW_FIRST` first (the rest as collected), and give every test its file's
    ``xdist_group`` unless it has one: a file's module and session fixtures are made once, on one
    worker (``loadgroup`` keeps a group together). The tests reading :func:`pipelines_at_once`
    share one group across their files, so the three pipelines run once per session."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda it: rank.get(it.path.name, len(rank)))
    for it in items:
        if it.get_closest_marker("xdist_group") is None:
            it.add_marker(pytest.mark.xdist_group(it.path.name))


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness: a throwaway database and API server for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture()
def home(tmp_path):
    from clipgeo.core.config import DataHome

    return DataHome.resolve(tmp_path / "home").ensure()


def make_prepared_home(root, *, n_train: int = 64, n_val: int = 40, steps: int = 3, seed: int = 3):
    """A data home with a small shapes dataset registered and one tiny model trained.

    Returns (home, val dataset id, checkpoint path). Uses the library directly (no Prefect).
    """
    from clipgeo.core.config import DataHome
    from clipgeo.models.train import TrainSpec, train_tiny
    from clipgeo.sources.shapes import ShapesSpec
    from clipgeo.stages.ingest import ingest_shapes, load_samples

    home = DataHome.resolve(root).ensure()
    splits = ingest_shapes(home, ShapesSpec(n_train=n_train, n_val=n_val, seed=seed), progress=False)
    res = train_tiny(load_samples(home, splits["train"].dataset_id), TrainSpec(steps=steps, batch_size=32, seed=seed),
                     home.checkpoints, splits["train"].dataset_id, progress=False)
    return home, splits["val"].dataset_id, str(res.checkpoint)


# ---- a real Prefect server for the served deployments (tests/test_deployments.py, test_track_served.py) ----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session=True`` (SIGINT to its group, then SIGKILL)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(pred, timeout: float, what: str, step: float = 1.0):
    """``pred()``'s first truthy value, polled every ``step`` s; an AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One real local Prefect server (``prefect server start``: API and scheduler) for the
    whole session: ``(api url, environment for processes that talk to it, its folder)``.
    Use :func:`served_prefect`, which gives each test a server without deployments."""
    import httpx

    tmp = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ)
    env.update({"PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_API_URL": api,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                "PYTHONUNBUFFERED": "1"})
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def healthy():
        if proc.poll() is not None:
            raise AssertionError(f"prefect server exited: {(tmp / 'server.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{api}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 240, "the Prefect server's /api/health")
        yield api, env, tmp
    finally:
        stop(proc)
        log.close()


def _delete_deployments(api: str) -> None:
    """Every deployment on the server deleted (with its scheduled runs, Prefect deletes those)."""
    import httpx

    r = httpx.post(f"{api}/deployments/filter", json={}, timeout=30)
    r.raise_for_status()
    for d in r.json():
        httpx.delete(f"{api}/deployments/{d['id']}", timeout=30).raise_for_status()
    left = httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()
    assert left == [], [d["name"] for d in left]


@pytest.fixture()
def served_prefect(prefect_server):
    """The session's Prefect server with no deployment on it, before and after the test: the
    deployments a test's ``clipgeo serve`` registers are new ones (new ids, no runs scheduled
    by an earlier test's), so its flow-run filters by deployment id see its own runs only."""
    api = prefect_server[0]
    _delete_deployments(api)
    yield prefect_server
    _delete_deployments(api)


# ---- the main job, three at once on one home (tests/test_operations.py, test_embed_workers.py) ----

#: ``clipgeo run`` small: shapes 96 + 40 images, two tiny models of 4 steps, one decode worker, reports made.
PIPELINE_ARGS = ["--n-train", "96", "--n-val", "40", "--train-steps", "4", "--seed", "5", "--num-workers", "1"]


@dataclass
class PipelinesAtOnce:
    home: object            # the shared DataHome
    outs: list[str]         # each command's whole output (stdout and stderr: its user's terminal)
    returncodes: list[int]
    answers: list[int]      # what the reader got from `SELECT count(*) FROM runs` meanwhile
    errors: list[str]       # the reader's failures


def terminal_env(root: Path, name: str) -> dict[str, str]:
    """A user's environment for one command: its own Prefect home and temporary server (no
    ``PREFECT_API_URL``), LanceDB's log as it is by default (``LANCEDB_LOG`` unset)."""
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": str(REPO),
        "PREFECT_HOME": str(root / f"prefect-{name}"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("PREFECT_API_URL", None)
    env.pop("LANCEDB_LOG", None)
    return env


def run_pipelines_at_once(root: Path, n: int = 3) -> PipelinesAtOnce:
    """``n`` main jobs (``clipgeo run`` with :data:`PIPELINE_ARGS`) started at once on one fresh
    home under ``root``, each as a user would (:func:`terminal_env`), and a reader querying the
    catalog every 0.2 s meanwhile. Returns what they printed and what the reader saw; checks nothing."""
    from clipgeo.core.config import DataHome
    from clipgeo.store.query import read_only_query

    home_dir = root / "shared-home"
    args = ["run", "--home", str(home_dir), *PIPELINE_ARGS]
    procs = [subprocess.Popen(CLI + args, cwd=REPO, env=terminal_env(root, f"p{i}"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(n)]
    home = DataHome.resolve(home_dir)
    answers, errors = [], []
    stop_reading = threading.Event()

    def reader():
        while not stop_reading.is_set():
            if home.catalog.exists():
                try:
                    answers.append(read_only_query(home, "SELECT count(*) AS n FROM runs")["n"][0])
                except Exception as exc:  # any failure to answer is a test failure
                    if "no catalog" not in str(exc):
                        errors.append(repr(exc))
            time.sleep(0.2)

    t = threading.Thread(target=reader)
    t.start()
    try:
        outs = [p.communicate(timeout=1800)[0] for p in procs]
    finally:
        stop_reading.set()
        t.join()
        for p in procs:
            if p.poll() is None:
                p.kill()
    return PipelinesAtOnce(home, outs, [p.returncode for p in procs], answers, errors)


#: The ``xdist_group`` of the tests that read :func:`pipelines_at_once` (one worker makes it once).
PIPELINES_GROUP = pytest.mark.xdist_group("pipelines_at_once")


@pytest.fixture(scope="session")
def pipelines_at_once(tmp_path_factory) -> PipelinesAtOnce:
    """Three main jobs at once on one home (:func:`run_pipelines_at_once`), once per session:
    the concurrency check (test_operations.py, its first round) and the check of what a user's
    terminal shows (test_embed_workers.py) read the same three runs (both marked
    :data:`PIPELINES_GROUP`, so that under pytest-xdist they run on the worker that made them)."""
    return run_pipelines_at_once(tmp_path_factory.mktemp("pipelines-at-once"), 3)
