"""Following a training checkpoint by checkpoint (issue 26): discovery, settling, hashing,
the trainer's intermediate checkpoints, the track flow (light points, full ends, rejects, a
rewritten epoch_latest.pt, two passes at once), v_trajectory and the trajectory page."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clipgeo import tracking
from clipgeo.stages.track import LIGHT_SECTIONS
from clipgeo.store import catalog, vectors


# --- pure: clipgeo/tracking.py ------------------------------------------------------------

def test_positions_from_names_sidecars_and_checkpoint_dicts(tmp_path):
    assert tracking.position_from_name("epoch_12.pt") == (None, 12.0)
    assert tracking.position_from_name("step_000300.pt") == (300, None)
    assert tracking.position_from_name("global_step1200.pt") == (1200, None)
    assert tracking.position_from_name("epoch_latest.pt") == (None, None)
    assert tracking.position_from_name("clipgeo-tiny-vit-infonce-1a2b3c4d5e6f.pt") == (None, None)
    oc = tmp_path / "epoch_latest.pt"     # open_clip's layout: the epoch is in the dict
    torch.save({"epoch": 7, "name": "run", "state_dict": {"module.w": torch.ones(2)}, "optimizer": {"state": {}}}, oc)
    assert tracking.position_from_meta(oc) == (None, 7.0)
    other = tmp_path / "weights.pt"       # a step recorded by another trainer
    torch.save({"global_step": 4000, "model": {"w": torch.ones(1)}}, other)
    assert tracking.position_from_meta(other) == (4000, None)
    side = tmp_path / "snap.pt"           # a sidecar wins over the file
    torch.save({"w": torch.ones(1)}, side)
    side.with_suffix(".json").write_text('{"step": 55}')
    assert tracking.position_from_meta(side) == (55, None)
    bare = tmp_path / "bare.pt"
    torch.save({"w": torch.ones(1)}, bare)
    assert tracking.position_from_meta(bare) == (None, None)


def test_find_checkpoints_skips_hidden_and_temporary_files(tmp_path):
    ck = tmp_path / "logs" / "exp" / "checkpoints"
    ck.mkdir(parents=True)
    for name in ("epoch_1.pt", "epoch_latest.pt", ".epoch_2.pt.tmp-99", "epoch_2.pt.part", "out.log"):
        (ck / name).write_bytes(b"x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "epoch_9.pt").write_bytes(b"x")
    assert [p.name for p in tracking.find_checkpoints(tmp_path)] == ["epoch_1.pt", "epoch_latest.pt"]
    with pytest.raises(NotADirectoryError, match="not a directory"):
        tracking.find_checkpoints(tmp_path / "nope")


def test_a_file_growing_during_the_wait_is_not_settled(tmp_path):
    p = tmp_path / "step_1.pt"
    p.write_bytes(b"a" * 10)
    old = time.time() - 100
    q = tmp_path / "step_2.pt"
    q.write_bytes(b"b")
    os.utime(q, (old, old))

    def writer_keeps_going(seconds):   # the wait, while a trainer appends to p
        with open(p, "ab") as f:
            f.write(b"more")

    ready, busy = tracking.settled([p, q], 5.0, sleep=writer_keeps_going)
    assert list(ready) == [q] and busy == [p]
    os.utime(p, (old, old))            # finished, and old enough: settled with no wait
    waited = []
    ready, busy = tracking.settled([p, q], 5.0, sleep=waited.append)
    assert set(ready) == {p, q} and busy == [] and waited == []
    ready, busy = tracking.settled([tmp_path / "gone.pt"], 5.0, sleep=waited.append)
    assert ready == {} and busy == []


def test_snapshot_holds_exactly_the_hashed_bytes(tmp_path):
    src = tmp_path / "epoch_latest.pt"
    src.write_bytes(os.urandom(3000))
    state = tracking.FileState.of(src)
    copy, sha = tracking.snapshot(src, state, tmp_path / "snap")
    assert sha == hashlib.sha256(src.read_bytes()).hexdigest() == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert copy.name == f"{sha[:12]}-epoch_latest.pt"
    with open(src, "r+b") as f:        # rewritten in place after the stat: refused, no copy kept
        f.write(b"changed")
    with pytest.raises(tracking.ChangedWhileReading, match="still being written"):
        tracking.snapshot(src, state, tmp_path / "snap2")
    with pytest.raises(tracking.ChangedWhileReading):
        tracking.hash_settled(src, state)
    assert not list((tmp_path / "snap2").iterdir())


def test_full_points_are_the_first_the_last_when_finished_and_the_named():
    pts = [("c" * 64, 200.0, "step_200.pt"), ("a" * 64, 0.0, "step_0.pt"), ("b" * 64, 100.0, "step_100.pt")]
    assert tracking.full_points(pts, [], finished=False) == {"a" * 64}
    assert tracking.full_points(pts, [], finished=True) == {"a" * 64, "c" * 64}
    assert tracking.full_points(pts, ["100"], finished=False) == {"a" * 64, "b" * 64}
    assert tracking.full_points(pts, ["bbbbbbbb"], finished=False) == {"a" * 64, "b" * 64}
    assert tracking.full_points([], ["x"], finished=True) == set()


# --- the trainer's intermediate checkpoints and the flow ----------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small home, and one tiny training with intermediate checkpoints every 2 of 4 steps."""
    from clipgeo.core.config import DataHome
    from clipgeo.models.train import TrainSpec, intermediate_dir, train_tiny
    from clipgeo.sources.shapes import ShapesSpec
    from clipgeo.stages.ingest import ingest_shapes, load_samples

    root = tmp_path_factory.mktemp("track")
    home = DataHome.resolve(root / "home").ensure()
    splits = ingest_shapes(home, ShapesSpec(n_train=64, n_val=40, seed=3), progress=False)
    train_id, val = splits["train"].dataset_id, splits["val"].dataset_id
    samples = load_samples(home, train_id)
    spec = TrainSpec(steps=4, batch_size=32, seed=3, objective="infoloob")
    res = train_tiny(samples, spec, home.checkpoints, train_id, progress=False, save_every=2)
    plain = train_tiny(samples, spec, root / "plain", train_id, progress=False)
    return home, val, res, plain, intermediate_dir(res.checkpoint), root


def test_save_every_keeps_loadable_intermediates_and_changes_nothing_else(trained):
    from clipgeo.models.loader import load_model
    from clipgeo.models.train import sha256_file

    home, val, res, plain, folder, _ = trained
    a = torch.load(res.checkpoint, weights_only=True)["state_dict"]
    b = torch.load(plain.checkpoint, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)   # saving did not disturb training
    files = tracking.find_checkpoints(folder)
    assert [p.name for p in files] == ["step_000000.pt", "step_000002.pt", "step_000004.pt"]
    assert sha256_file(files[-1]) == res.sha256                  # the final, linked as the last step
    assert [tracking.position_from_meta(p)[0] for p in files] == [0, 2, 4]
    mid = load_model("clipgeo-tiny-vit", str(files[1]), device="cpu")
    assert mid.logit_scale == pytest.approx(30.0) and mid.meta["step"] == 2 and mid.meta["final"] is False
    sd = torch.load(files[1], weights_only=True)["state_dict"]
    assert sd["token_embedding.weight"].shape == a["token_embedding.weight"].shape  # full vocabulary, as open_clip's
    assert not torch.equal(sd["visual.proj"], a["visual.proj"])     # step 2 is not the final weights


def _open_clip_checkpoint(src: Path, dest: Path, epoch: int) -> None:
    """src's weights in open_clip's training layout (DDP prefix, epoch, optimizer state)."""
    sd = torch.load(src, weights_only=True)["state_dict"]
    torch.save({"epoch": epoch, "name": "exp", "state_dict": {f"module.{k}": v for k, v in sd.items()},
                "optimizer": {"state": {}, "param_groups": []}}, dest)


def _age(path: Path, seconds: float = 60) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.mark.slow
def test_track_flow_points_rejects_latest_rewrites_and_concurrent_passes(trained, prefect_harness, monkeypatch):
    from clipgeo.stages import measure as sm
    from flows.track import track_flow

    home, val, res, _, folder, root = trained
    measured: dict[str, int] = {}
    real_measure = sm.measure_run

    def counting_measure(h, run_id, **kw):
        measured[run_id] = measured.get(run_id, 0) + 1
        return real_measure(h, run_id, **kw)

    monkeypatch.setattr(sm, "measure_run", counting_measure)
    for p in folder.iterdir():
        _age(p)

    # two passes over the same training at once (two processes, as two schedules firing together):
    # each checkpoint embedded and measured by one of them, the other waits and reuses it
    from prefect.settings import PREFECT_API_URL

    code = ("import json, sys; from flows.track import track_flow; r = track_flow(sys.argv[1], 'clipgeo-tiny-vit', "
            "sys.argv[2], home=sys.argv[3], settle_seconds=0.2, make_report=False); "
            "print('RESULT ' + json.dumps(r['trainings'][0]))")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(Path(__file__).parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(folder), val, str(home.root)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-2000:] for o in outs]
    both = [json.loads(next(line for line in o.splitlines() if line.startswith("RESULT "))[7:]) for o in outs]
    done_by = [run for r in both for run in r["light"] + r["full"]]
    assert len(done_by) == len(set(done_by)) == 3, both            # each of the 3 checkpoints measured once
    with catalog.session(home) as con:
        rows = catalog.query(con, "SELECT name, step, measure, status, run_id FROM training_checkpoints ORDER BY step")
    assert rows["name"].to_list() == ["step_000000.pt", "step_000002.pt", "step_000004.pt"]
    assert rows["measure"].to_list() == ["full", "light", "light"]   # training not finished: only the first is full
    versions = {vectors.table_version(home, r) for r in rows["run_id"]}
    assert len(versions) == 1                                       # each table written by one commit
    with catalog.session(home) as con:
        light = rows["run_id"][1]
        secs = dict(catalog.execute(con, "SELECT section, status FROM measure_sections WHERE run_id = ?", [light]))
        samples = {s for (s,) in catalog.execute(con, "SELECT section FROM measure_samples WHERE run_id = ?", [light])}
    assert {s for s, st in secs.items() if st == "ok"} == set(LIGHT_SECTIONS) == samples
    assert secs["umap"] == "skipped" and secs["clusters"] == "skipped"

    # open_clip's layout: epoch_latest.pt holding epoch_1's bytes, and a truncated epoch_2.pt
    ck = root / "logs" / "exp" / "checkpoints"
    ck.mkdir(parents=True)
    _open_clip_checkpoint(folder / "step_000002.pt", ck / "epoch_1.pt", 1)
    shutil.copyfile(ck / "epoch_1.pt", ck / "epoch_latest.pt")
    (ck / "epoch_2.pt").write_bytes((ck / "epoch_1.pt").read_bytes()[:4096])
    for p in ck.iterdir():
        _age(p)
    oc = track_flow(str(root / "logs" / "exp"), "clipgeo-tiny-vit", val, home=str(home.root), settle_seconds=0.2)
    r = oc["trainings"][0]
    assert len(r["full"]) == 1 and r["light"] == [] and [Path(p).name for p in r["rejected"]] == ["epoch_2.pt"]
    with catalog.session(home) as con:
        rej = catalog.execute(con, "SELECT stage, reason, n_images, n_captions FROM rejects WHERE stage = 'checkpoint'")
    assert len(rej) == 1 and "truncated or corrupt" in rej[0][1] and rej[0][2:] == (0, 0)

    # epoch_latest.pt rewritten in place (same inode) with the next epoch: a new point beside the old
    inode = (ck / "epoch_latest.pt").stat().st_ino
    _open_clip_checkpoint(folder / "step_000004.pt", root / "next.pt", 2)
    with open(ck / "epoch_latest.pt", "r+b") as f:
        data = (root / "next.pt").read_bytes()
        f.write(data)
        f.truncate(len(data))
    _age(ck / "epoch_latest.pt", 30)
    assert (ck / "epoch_latest.pt").stat().st_ino == inode
    again = track_flow(home=str(home.root), settle_seconds=0.2, finished_after=1e6)   # every registered training
    assert [len(x["light"]) for x in again["trainings"]] == [0, 1] or [len(x["light"]) for x in again["trainings"]] == [1, 0]
    tid = r["training_id"]
    with catalog.session(home) as con:
        pts = catalog.query(con, "SELECT name, epoch, measure, status, run_id, checkpoint_sha256 FROM training_checkpoints"
                                 " WHERE training_id = ? ORDER BY epoch", [tid])
        latest_run = pts.filter(pts["name"] == "epoch_latest.pt")["run_id"][0]
        src = catalog.execute(con, "SELECT m.pretrained FROM runs JOIN models m USING (model_id) WHERE run_id = ?",
                              [latest_run])[0][0]
    assert pts["name"].to_list() == ["epoch_1.pt", "epoch_2.pt", "epoch_latest.pt"]
    assert pts["status"].to_list() == ["measured", "rejected", "measured"] and pts["epoch"].to_list() == [1.0, 2.0, 2.0]
    assert Path(src).parent == home.checkpoints / "tracked" / tid       # embedded from the snapshot of those bytes
    assert hashlib.sha256(Path(src).read_bytes()).hexdigest() == pts["checkpoint_sha256"][2] == \
        hashlib.sha256((ck / "epoch_latest.pt").read_bytes()).hexdigest()

    # finished: the last point is measured again, fully (the freshness key holds the sections); once
    before = dict(measured)
    done = track_flow(home=str(home.root), settle_seconds=0.2, finished_after=0.0)
    assert sorted(run for x in done["trainings"] for run in x["full"]) == sorted([latest_run, rows["run_id"][2]])
    assert track_flow(home=str(home.root), settle_seconds=0.2, finished_after=0.0)["trainings"][0]["full"] == []
    assert {k: v - before.get(k, 0) for k, v in measured.items() if v != before.get(k, 0)} == {
        latest_run: 1, rows["run_id"][2]: 1}

    # v_trajectory: v_headline's rows of the same runs, nothing redefined
    with catalog.session(home) as con:
        traj = catalog.query(con, "SELECT * FROM v_trajectory ORDER BY run_id")
        head = catalog.query(con, "SELECT * FROM v_headline WHERE run_id IN (SELECT run_id FROM v_trajectory)"
                                  " ORDER BY run_id")
        n_points = catalog.execute(con, "SELECT count(*) FROM training_checkpoints WHERE status = 'measured'")[0][0]
    assert traj.height == n_points == 5
    assert traj.columns[:4] == ["training_id", "step", "epoch", "run_id"]
    assert traj.select(head.columns).equals(head)

    # the trajectory page: offline in headless Chromium, one line per training in each panel
    from dashboards.trajectory import METRICS
    from tests.browser import render

    page = home.reports / "trajectory.html"
    assert page.exists() and 'href="trajectory.html"' in (home.reports / "index.html").read_text()
    status, dom = render(page)
    assert status["jsErrors"] == [] and status["chartErrors"] == [], status
    assert status["rendered"] == status["total"] == status["withGraphics"] == 1, status
    expected = sum(int(traj.filter(traj["training_id"] == t)[m].drop_nulls().drop_nans().len() > 0)
                   for t in traj["training_id"].unique() for m, _ in METRICS)
    assert dom.count('aria-roledescription="line mark"') == expected
    assert expected >= 2 * (len(METRICS) - 1)    # both trainings in every panel (mixing: full points only)


def test_track_arguments_are_checked_before_any_flow(tmp_path, capsys):
    from flows.cli import main

    assert main(["track", str(tmp_path), "--home", str(tmp_path / "h")]) == 2
    assert "--arch" in capsys.readouterr().err
    assert main(["track", str(tmp_path / "nope"), "--arch", "clipgeo-tiny-vit", "--dataset", "d",
                 "--home", str(tmp_path / "h")]) == 2
    assert "not a directory" in capsys.readouterr().err
