"""Operating clipgeo: crash safety, resume, concurrent writers, readers during writes, Dask."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from clipgeo.stages.embedding import ModelRef, model_identity, run_id_for, shard_file, staging_dir
from clipgeo.store import catalog, vectors
from tests.conftest import PIPELINES_GROUP, make_prepared_home, run_pipelines_at_once

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "flows.cli"]


def _env(tmp_path: Path, name: str, api_url: str | None = None) -> dict[str, str]:
    """A command's environment: its own Prefect home; the API at ``api_url``, or (None) none, so
    that the command starts its own temporary server as a user's does."""
    env = dict(os.environ)
    env.update({
        "PREFECT_HOME": str(tmp_path / f"prefect-{name}"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _exactly_once(home, run_id, n_images, n_texts):
    rv = vectors.read_run(home, run_id)
    assert len(rv.image_ids) == n_images and len(set(rv.image_ids.tolist())) == n_images
    assert len(rv.sample_ids) == n_texts and len(set(rv.sample_ids.tolist())) == n_texts


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared_home(tmp_path_factory.mktemp("ops") / "home", n_val=120)


def test_shard_failure_fails_the_run_naming_the_shard_and_commits_nothing(prepared, prefect_harness, monkeypatch):
    home, dataset_id, ckpt = prepared
    from clipgeo.stages import embedding
    from flows.embed import embed_flow

    real = embedding.embed_shard
    calls = []

    def flaky(home_, plan, shard, **kw):
        calls.append(shard.index)
        if shard.index == 1:
            raise OSError("disk on fire")
        return real(home_, plan, shard, **kw)

    monkeypatch.setattr("flows.embed.embed_shard", flaky)
    with pytest.raises(RuntimeError, match="shard 1"):
        embed_flow("clipgeo-tiny-vit", dataset_id, ckpt, home=str(home.root), shard_images=50, force=True)
    assert calls.count(1) == 3  # first try + 2 retries
    with catalog.session(home, read_only=True) as con:
        status, error = catalog.execute(con, "SELECT status, error FROM runs WHERE dataset_id = ?", [dataset_id])[0]
    assert status == "failed" and "shard 1" in error
    run_id = run_id_for(model_identity(ModelRef("clipgeo-tiny-vit", ckpt))[0], dataset_id)
    assert vectors.count_rows(home, run_id) == {}  # nothing half-written


def test_sigkill_mid_embedding_then_rerun_gives_each_vector_exactly_once(tmp_path, prefect_harness):
    # both commands talk to the session's test server: the crash and its recovery are the data
    # home's, not Prefect's (a killed command's own temporary server: test_kill_9_... below)
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    home, dataset_id, ckpt = make_prepared_home(tmp_path / "home", n_val=400)
    run_id = run_id_for(model_identity(ModelRef("clipgeo-tiny-vit", ckpt))[0], dataset_id)
    cmd = CLI + ["embed", "clipgeo-tiny-vit", dataset_id, "--pretrained", ckpt, "--home", str(home.root),
                 "--shard-images", "8"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(tmp_path, "a", api), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stage = staging_dir(home, run_id)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(stage.glob("shard-*.npz"))) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the embedding finished before it could be killed: make the dataset larger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    staged = sorted(stage.glob("shard-*.npz"))
    assert 3 <= len(staged) < 50
    assert vectors.count_rows(home, run_id) == {}  # killed before the commit: no table at all

    subprocess.run(cmd, cwd=REPO, env=_env(tmp_path, "a", api), check=True, timeout=600,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _exactly_once(home, run_id, 400, 1200)
    with catalog.session(home, read_only=True) as con:
        assert catalog.execute(con, "SELECT status, n_images, n_texts FROM runs WHERE run_id = ?", [run_id])[0] == (
            "embedded", 400, 1200)
    assert not stage.exists()


def test_resume_reuses_staged_shards(tmp_path, monkeypatch):
    home, dataset_id, ckpt = make_prepared_home(tmp_path / "home", n_val=40)
    from clipgeo.stages import embedding

    ref = ModelRef("clipgeo-tiny-vit", ckpt)
    plan = embedding.prepare_run(home, ref, dataset_id, shard_images=10)
    embedding.embed_shard(home, plan, plan.shards[0], progress=False)
    first = shard_file(home, plan.run_id, 0)
    mtime = first.stat().st_mtime_ns
    seen = []
    import clipgeo.embedding.embed

    real = clipgeo.embedding.embed.embed_image_refs
    monkeypatch.setattr("clipgeo.embedding.embed.embed_image_refs",
                        lambda lm, refs, **kw: seen.append(len(refs)) or real(lm, refs, **kw))
    embedding.embed_run(home, ref, dataset_id, shard_images=10, progress=False)
    assert seen == [10, 10, 10]  # shard 0 was not embedded again
    _exactly_once(home, plan.run_id, 40, 120)
    assert mtime and not first.exists()  # staged files are removed after the commit


def _check_pipelines_at_once(res, n: int = 3) -> None:
    """``n`` pipelines started at once on one fresh home, and a reader querying meanwhile: all
    complete; each spec is trained once, each run embedded once (one Lance version) and measured once."""
    home, outs, errors, answers = res.home, res.outs, res.errors, res.answers
    for rc, out in zip(res.returncodes, outs):
        assert rc == 0, out[-3000:]
    assert not errors, errors[:3]
    assert answers, "the reader never got an answer"
    log = "\n".join(outs)
    assert log.count("model trained in") == 2, "each of the 2 specs is trained exactly once"
    assert log.count("reused: infonce model") + log.count("reused: infoloob model") == 2 * (n - 1)
    assert log.count("embedded 96 images") == 2 and log.count("embedded 40 images") == 2, "each run embedded once"
    assert len([ln for ln in log.splitlines() if "Task run 'measure" in ln and " measured: {" in ln]) == 2
    with catalog.session(home, read_only=True) as con:
        q = lambda sql: catalog.execute(con, sql)[0][0]  # noqa: E731
        assert q("SELECT count(*) FROM runs") == 4  # per model: val (measured) + train (reference)
        assert q("SELECT count(*) FROM samples") == (96 + 40) * 3
        assert q("SELECT count(*) FROM retrieval") == 12
        assert q("SELECT count(*) FROM retrieval_ranks") == 2 * (40 + 120)
        assert q("SELECT count(*) FROM runs WHERE status = 'measured'") == 2
        all_runs = [r for (r,) in catalog.execute(con, "SELECT run_id FROM runs")]
        measured = [r for (r,) in catalog.execute(con, "SELECT run_id FROM runs WHERE status = 'measured'")]
    first = vectors.connect(home).open_table(vectors.table_name(all_runs[0])).version
    assert {vectors.table_version(home, r) for r in all_runs} == {first}, "a run was written more than once"
    for run_id in measured:
        _exactly_once(home, run_id, 40, 120)


# One round in the default suite; `make stress` runs ROUNDS (default 5) through this variable.
ROUNDS = int(os.environ.get("CLIPGEO_CONCURRENCY_ROUNDS", "1"))


@PIPELINES_GROUP
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_three_pipelines_on_one_home_at_once_and_a_reader(request, tmp_path, round_):
    # round 0: the session's three main jobs (conftest.pipelines_at_once, whose output
    # test_embed_workers also reads); every further round starts three fresh ones
    res = request.getfixturevalue("pipelines_at_once") if round_ == 0 else run_pipelines_at_once(tmp_path, 3)
    _check_pipelines_at_once(res, 3)


def test_a_unit_has_one_holder_and_a_killed_holders_lock_is_free(tmp_path):
    from clipgeo.core.config import DataHome
    from clipgeo.store import locks

    home = DataHome.resolve(tmp_path / "home").ensure()
    order = []

    def second():
        with locks.claim(home, "train-x", poll=0.01) as waited:
            order.append(("second", waited))

    with locks.claim(home, "train-x") as waited:
        assert not waited
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)
        order.append(("first", False))  # the second is still waiting here
    t.join(timeout=60)
    assert order == [("first", False), ("second", True)]
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from clipgeo.core.config import DataHome; from clipgeo.store import locks\n"
        f"with locks.claim(DataHome.resolve({str(home.root)!r}), 'run-r1'):\n"
        "    print('held', flush=True); time.sleep(600)")], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(locks.LockTimeout, match="run-r1: still held by pid"):
        with locks.claim(home, "run-r1", wait_seconds=0.3, poll=0.05):
            pass
    holder.kill()  # SIGKILL: no cleanup code runs
    holder.wait()
    with locks.claim(home, "run-r1", wait_seconds=30) as waited:
        assert locks.holder(locks.lock_path(home, "run-r1"))["pid"] == os.getpid()


@pytest.mark.slow
def test_dask_runner_gives_the_same_vectors(tmp_path, prefect_harness):
    from distributed import LocalCluster

    from flows.embed import embed_flow, task_runner_for

    home, dataset_id, ckpt = make_prepared_home(tmp_path / "home", n_val=60)
    run_id = embed_flow("clipgeo-tiny-vit", dataset_id, ckpt, home=str(home.root), shard_images=16)
    local = vectors.read_run(home, run_id)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        flow = embed_flow.with_options(task_runner=task_runner_for(cluster.scheduler_address))
        again = flow("clipgeo-tiny-vit", dataset_id, ckpt, home=str(home.root), shard_images=16, force=True)
    assert again == run_id
    dask = vectors.read_run(home, run_id)
    assert dask.image_ids.tolist() == local.image_ids.tolist()
    assert dask.sample_ids.tolist() == local.sample_ids.tolist()
    np.testing.assert_allclose(dask.images, local.images, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dask.texts, local.texts, rtol=1e-5, atol=1e-6)


def test_kill_9_of_a_command_takes_its_temporary_server_down(tmp_path):
    import psutil

    home, dataset_id, ckpt = make_prepared_home(tmp_path / "home", n_val=400)
    cmd = CLI + ["embed", "clipgeo-tiny-vit", dataset_id, "--pretrained", ckpt, "--home", str(home.root),
                 "--shard-images", "8"]
    log = open(tmp_path / "cmd.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(tmp_path, "k"), stdout=log, stderr=subprocess.STDOUT)
    try:
        def server():
            for child in psutil.Process(proc.pid).children(recursive=True):
                if "uvicorn" in " ".join(child.cmdline()):
                    return child
            return None

        deadline = time.monotonic() + 600
        found = None
        while time.monotonic() < deadline and proc.poll() is None and found is None:
            found = server()
            time.sleep(0.2)
        assert found is not None, (tmp_path / "cmd.log").read_text()[-2000:]
        proc.kill()  # SIGKILL: no atexit, no cleanup in the command
        proc.wait()
        gone, alive = psutil.wait_procs([found], timeout=60)
        assert not alive, "the temporary Prefect server outlived its command"
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
