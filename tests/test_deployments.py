"""Deployments against a real local Prefect server (the session's, ``served_prefect`` in conftest)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from clipgeo.core.config import DataHome
from clipgeo.store import catalog, vectors
from flows.serve import DEPLOYMENTS, prefect_yaml
from tests.conftest import stop as _stop
from tests.conftest import wait_for as _wait

REPO = Path(__file__).resolve().parents[1]
SMALL = {"n_train": 96, "n_val": 40, "train_steps": 4, "seed": 7}


def _run_deployment(api: str, deployment_id: str, parameters: dict, timeout: float = 600) -> dict:
    for attempt in range(5):   # a local server busy beside the suite can answer 503 (seen once in CI-like load)
        r = httpx.post(f"{api}/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters},
                       timeout=30)
        if r.status_code != 503:
            break
        time.sleep(2 * (attempt + 1))
    r.raise_for_status()
    run_id = r.json()["id"]

    def finished():
        fr = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
        return fr if fr["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return _wait(finished, timeout, f"flow run {run_id}", step=2)


def _task_states(api: str, flow_run_id: str) -> list[tuple[str, str]]:
    r = httpx.post(f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}, timeout=30)
    r.raise_for_status()
    return [(t["name"], t["state"]["name"]) for t in r.json()]


@pytest.mark.slow
def test_served_pipeline_run_and_cached_rerun_from_the_api(served_prefect, tmp_path):
    api, env, _ = served_prefect
    home = DataHome.resolve(tmp_path / "home")
    serve_log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([sys.executable, "-m", "flows.serve", "--home", str(home.root)], cwd=REPO, env=env,
                             stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def deployment():
            r = httpx.get(f"{api}/deployments/name/clipgeo-pipeline/offline-default", timeout=5)
            return r.json() if r.status_code == 200 else None

        dep = _wait(deployment, 240, "the served deployment to register")
        expected = {d.name for d in DEPLOYMENTS}

        def all_registered():
            names = {d["name"] for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()}
            return expected <= names

        _wait(all_registered, 60, f"all deployments {sorted(expected)}")
        scheduled = httpx.get(f"{api}/deployments/name/clipgeo-analyse/nightly-reanalysis", timeout=5).json()
        assert scheduled["schedules"] and scheduled["schedules"][0]["schedule"]["cron"] == "0 3 * * *"

        first = _run_deployment(api, dep["id"], SMALL)
        assert first["state"]["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        with catalog.session(home, read_only=True) as con:
            counts1 = {t: catalog.execute(con, f"SELECT count(*) FROM {t}")[0][0]
                       for t in ("runs", "samples", "retrieval", "retrieval_ranks", "separability", "modality_gap")}
            run_ids = [r for (r,) in catalog.execute(con, "SELECT run_id FROM runs WHERE status = 'measured'")]
        assert counts1["runs"] == 4 and len(run_ids) == 2  # per model: val (measured) + train (reference)
        for run_id in run_ids:
            assert vectors.count_rows(home, run_id) == {"image": 40, "text": 120}

        def stored_state():
            with catalog.session(home, read_only=True) as con:
                states = catalog.execute(con, "SELECT unit, state, updated_at FROM stage_state ORDER BY unit")
            ckpts = {p.name: p.stat().st_mtime_ns for p in home.checkpoints.glob("*.pt")}
            return states, ckpts, {r: vectors.table_version(home, r) for r in run_ids}

        before = stored_state()
        second = _run_deployment(api, dep["id"], SMALL)  # a re-run, as from the UI
        assert second["state"]["type"] == "COMPLETED"
        states = _task_states(api, second["id"])
        assert [s for n, s in states if n.startswith("train-tiny-model")] == ["Completed", "Completed"], states
        assert stored_state() == before  # nothing retrained, re-embedded or re-measured: reused from the store
        with catalog.session(home, read_only=True) as con:
            counts2 = {t: catalog.execute(con, f"SELECT count(*) FROM {t}")[0][0] for t in counts1}
        assert counts2 == counts1  # no duplicates
        assert second["total_run_time"] < first["total_run_time"]
    finally:
        _stop(serve)
        serve_log.close()


def test_prefect_yaml_is_generated_from_the_served_deployments():
    text = (REPO / "prefect.yaml").read_text()
    version = re.search(r"^prefect-version: (\S+)$", text, flags=re.M).group(1)
    assert text == prefect_yaml(version), "prefect.yaml is stale: run python -m flows.serve --write-prefect-yaml"


def test_both_routes_declare_the_same_deployments():
    import yaml

    from flows.serve import deployments

    declared = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    served = {d.name: d for d in deployments()}
    assert set(declared) == set(served)
    for name, dep in served.items():
        y = declared[name]
        assert dep.description == y["description"], name
        assert (dep.parameters or {}) == (y["parameters"] or {}), name
        assert dep.flow_name == _flow_of(y["entrypoint"]).name, name
        served_schedules = [("cron", s.schedule.cron, s.schedule.timezone) if hasattr(s.schedule, "cron") else
                            ("interval", s.schedule.interval.total_seconds(), s.schedule.timezone)
                            for s in dep.schedules or []]
        assert served_schedules == [("cron", s["cron"], s["timezone"]) if "cron" in s else
                                    ("interval", float(s["interval"]), s["timezone"])
                                    for s in y.get("schedules") or []], name


def _flow_of(entrypoint: str):
    import importlib

    path, _, attr = entrypoint.partition(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attr)
