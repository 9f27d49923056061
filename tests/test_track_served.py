"""The ``track`` deployment against a real local Prefect server, on a short interval: a
checkpoint copied into a tracked folder is measured by the next scheduled run, and only once;
a checkpoint written slowly is skipped until it is complete. The session's Prefect server
(``served_prefect``: no deployment left from another test, so the ``track`` deployment and its
runs counted below are this test's own)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from clipgeo.store import catalog
from tests.conftest import stop as _stop
from tests.conftest import wait_for as _wait

REPO = Path(__file__).resolve().parents[1]

INTERVAL = 6  # seconds between two scheduled runs of the track deployment


def _points(home) -> dict[str, dict]:
    with catalog.session(home, read_only=True) as con:
        df = catalog.query(con, "SELECT name, status, measure, run_id, measured_at FROM training_checkpoints")
    return {r["name"]: r for r in df.to_dicts()}


def _state(home, run_id: str) -> tuple:
    with catalog.session(home, read_only=True) as con:
        return (catalog.execute(con, "SELECT unit, state, updated_at FROM stage_state WHERE unit = ?",
                                [f"measure:{run_id}"]),
                catalog.execute(con, "SELECT section, measured_at FROM measure_sections WHERE run_id = ? ORDER BY 1",
                                [run_id]))


def _finished_runs(api: str, deployment_id: str, after: dt.datetime) -> list[dict]:
    r = httpx.post(f"{api}/flow_runs/filter", json={
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}},
                      "start_time": {"after_": after.isoformat()}}}, timeout=30)
    r.raise_for_status()
    return r.json()


@pytest.mark.slow
def test_served_track_deployment_measures_each_new_checkpoint_once(served_prefect, tmp_path):
    from clipgeo.models.train import TrainSpec, intermediate_dir, train_tiny
    from clipgeo.stages.ingest import load_samples
    from clipgeo.stages.track import register_training
    from tests.conftest import make_prepared_home

    api, env, _ = served_prefect
    home, val, _ = make_prepared_home(tmp_path / "home", steps=1)
    train_id = val.replace(":val", ":train")
    res = train_tiny(load_samples(home, train_id), TrainSpec(steps=4, batch_size=32, seed=5), home.checkpoints,
                     train_id, progress=False, save_every=2)
    folder = intermediate_dir(res.checkpoint)
    later = tmp_path / "later"
    later.mkdir()
    for name in ("step_000002", "step_000004"):     # not written yet: the test adds them below
        for ext in (".pt", ".json"):
            shutil.move(folder / f"{name}{ext}", later / f"{name}{ext}")
    register_training(home, folder, "clipgeo-tiny-vit", val, label="served")

    serve_env = {**env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([sys.executable, "-m", "flows.serve", "--home", str(home.root), "--limit", "1",
                              "--track-interval", str(INTERVAL)], cwd=REPO, env=serve_env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def registered():
            r = httpx.get(f"{api}/deployments/name/clipgeo-track/track", timeout=5)
            return r.json() if r.status_code == 200 else None

        dep = _wait(registered, 240, "the track deployment to register")
        assert dep["schedules"][0]["schedule"]["interval"] == INTERVAL
        _wait(lambda: _points(home).get("step_000000.pt"), 300, "the first scheduled run to measure step 0")

        # a new checkpoint copied in: measured by a following scheduled run ...
        shutil.copyfile(later / "step_000002.pt", folder / "step_000002.pt")
        shutil.copyfile(later / "step_000002.json", folder / "step_000002.json")
        point = _wait(lambda: _points(home).get("step_000002.pt"), 300, "step 2 to be measured")
        assert point["status"] == "measured" and point["measure"] == "light"
        measured = _state(home, point["run_id"])
        # ... and only once: later scheduled runs leave it as it is
        since = dt.datetime.now(dt.timezone.utc)
        _wait(lambda: len(_finished_runs(api, dep["id"], since)) >= 2, 240, "two more scheduled runs")
        assert _points(home)["step_000002.pt"] == point and _state(home, point["run_id"]) == measured

        # a checkpoint written slowly (not atomically): skipped while it grows, measured once complete
        data = (later / "step_000004.pt").read_bytes()
        chunks = 60
        seen_while_writing: list[dict] = []

        def write_slowly():
            with open(folder / "step_000004.pt", "wb") as f:
                for i in range(chunks):
                    f.write(data[i * len(data) // chunks:(i + 1) * len(data) // chunks])
                    f.flush()
                    time.sleep(0.6)

        start = dt.datetime.now(dt.timezone.utc)
        writer = threading.Thread(target=write_slowly)
        writer.start()
        while writer.is_alive():
            seen_while_writing.append(_points(home))
            time.sleep(1.0)
        writer.join()
        end = dt.datetime.now(dt.timezone.utc)
        during = [r for r in _finished_runs(api, dep["id"], start)
                  if r["end_time"] and dt.datetime.fromisoformat(r["end_time"].replace("Z", "+00:00")) < end]
        assert during, "no scheduled run finished while the file was being written: the check saw nothing"
        assert all("step_000004.pt" not in p for p in seen_while_writing)   # never read half-written
        done = _wait(lambda: _points(home).get("step_000004.pt"), 300, "step 4 to be measured once complete")
        assert done["status"] == "measured"
        with catalog.session(home, read_only=True) as con:
            assert catalog.execute(con, "SELECT count(*) FROM rejects WHERE stage = 'checkpoint'")[0][0] == 0
        runs = _finished_runs(api, dep["id"], dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
        assert runs and all(r["state"]["type"] == "COMPLETED" for r in runs), (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        _stop(serve)
        log.close()
        os.sync()
