"""Follow a training run checkpoint by checkpoint: the ``clipgeo-track`` flow.

``clipgeo track CHECKPOINT_DIR --arch NAME --dataset ID`` registers the training and measures
every checkpoint found there that is not yet measured; the ``track`` deployment (an interval
schedule, no parameters) does the same for every registered training, so a training job that
writes checkpoints is measured while it goes on.

Per checkpoint (:mod:`clipgeo.tracking` finds them, waits until each is finished being written
and hashes it): under the lock ``track-<training>-<sha12>`` (two schedules firing together read
each checkpoint once), the fixed evaluation set is embedded (the run is identified by the
checkpoint's sha256, as every clipgeo run) and measured:

- a *trajectory point* measures :data:`clipgeo.stages.track.LIGHT_SECTIONS` (every headline figure
  but the UMAP-based mixing and clusters), the other sections are recorded ``skipped`` with
  that reason in ``measure_sections``;
- the *full suite* (every section, and the run's report page) runs on the first checkpoint,
  the last once the training is finished (no new checkpoint for ``finished_after`` seconds, or
  the caller says so) and every checkpoint named in ``full``; a light point that becomes one
  of these is measured again, fully (the freshness key holds the sections).

A checkpoint that cannot be read or embedded becomes a ``rejects`` row and the others go on.
Then the trajectory page (``reports/trajectory.html``) and the index are rewritten.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger

from clipgeo.core.config import ANALYSIS_VERSION, DataHome
from clipgeo.stages import track as store
from clipgeo.store import locks
from clipgeo.stages.track import LIGHT_SECTIONS
from clipgeo.tracking import (
    Candidate,
    ChangedWhileReading,
    find_checkpoints,
    full_points,
    hash_settled,
    is_overwritten_name,
    position_from_meta,
    position_from_name,
    settled,
    snapshot,
)
from flows.checks import BadInput, check_model, usable_home

LIGHT_WHY = ("trajectory point: light measurement (streamed sections, retrieval, separability); the full suite "
             "runs on the first, the last and the named checkpoints of the training")


def check_track(checkpoint_dir: str | None = None, arch: str | None = None, dataset: str | None = None,
                home: str | None = None, settle_seconds: float = 0.0, finished_after: float = 0.0,
                **_: object) -> DataHome:
    """The track flow's inputs: all three of folder, architecture and evaluation set, or none."""
    h = usable_home(home)
    given = {"checkpoint_dir": checkpoint_dir, "arch": arch, "dataset": dataset}
    if any(v is not None for v in given.values()) and not all(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        raise BadInput(f"clipgeo track: also pass {', '.join('--' + m.replace('_', '-') for m in missing)} "
                       "(or none of CHECKPOINT_DIR, --arch, --dataset to follow every registered training)")
    if settle_seconds < 0 or finished_after < 0:
        raise BadInput(f"settle_seconds ({settle_seconds}) and finished_after ({finished_after}) must be >= 0")
    if checkpoint_dir is None:
        return h
    if not Path(checkpoint_dir).expanduser().is_dir():
        raise BadInput(f"checkpoint folder {checkpoint_dir} is not a directory: pass the folder the training "
                       "writes its checkpoints into")
    check_model(arch)
    from flows.checks import check_embed

    check_embed(arch, dataset, None, home)
    return h


def _candidate(path: Path, state, snapshot_dir: Path) -> tuple[Candidate, Path]:
    """Hash (and for a file rewritten in place, copy) a settled file; read its position."""
    if is_overwritten_name(path.name):
        read_from, sha = snapshot(path, state, snapshot_dir)
    else:
        read_from, sha = path, hash_settled(path, state)
    step, epoch = position_from_name(path.name)
    source = "name"
    if step is None and epoch is None:
        step, epoch = position_from_meta(read_from)
        source = "metadata"
    return Candidate(path, sha, state, step, epoch, source), read_from


def _readable(path: Path) -> None:
    """Raise when the file is not a loadable torch checkpoint (truncated, not a zip, corrupt)."""
    import pickle

    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower() and "weights_only" not in str(exc).lower():
            raise ValueError(f"not a readable torch checkpoint ({exc})") from exc
        # holds more than tensors (e.g. pickled arguments): open_clip's own loader decides
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad header, I/O error
        raise ValueError(f"not a complete torch checkpoint (truncated or corrupt: {type(exc).__name__}: {exc})") from exc


def track_training(h: DataHome, t: store.Training, *, settle_seconds: float = 10.0, finished_after: float = 3600.0,
                   finished: bool | None = None, device: str | None = None) -> dict:
    """Measure the checkpoints of one training not yet measured as they must be; returns counts
    and the run ids of the points measured now (``light``, ``full``)."""
    from flows.embed import embed_flow

    log = get_run_logger()
    folder = Path(t.checkpoint_dir)
    out = {"training_id": t.training_id, "light": [], "full": [], "rejected": [], "pending": [], "reused": 0}
    if not folder.is_dir():
        log.warning("training %s: folder %s is gone: nothing to measure", t.label, folder)
        return out
    known = store.known_files(h, t.training_id)
    files = [p for p in find_checkpoints(folder)]
    new = []
    for p in files:
        try:
            if store.file_key(p, _state(p)) not in known:
                new.append(p)
        except FileNotFoundError:
            continue
    ready, busy = settled(new, settle_seconds)
    out["pending"] = [str(p) for p in busy]
    for p in busy:
        log.info("training %s: %s is still being written (size or mtime changed within %.0f s): next pass", t.label,
                 p.name, settle_seconds)
    have = store.points(h, t.training_id)
    fresh: dict[str, tuple[Candidate, Path]] = {}
    for p, state in ready.items():
        try:
            c, read_from = _candidate(p, state, h.checkpoints / "tracked" / t.training_id)
        except ChangedWhileReading as exc:
            log.info("training %s: %s", t.label, exc)
            out["pending"].append(str(p))
            continue
        except Exception as exc:  # noqa: BLE001 - an unreadable file is one reject, the others go on
            c = Candidate(p, _sha_or_blank(p), state, *position_from_name(p.name), "name")
            _reject(h, t, c, f"cannot read checkpoint: {type(exc).__name__}: {exc}", out, log)
            continue
        if c.sha256 in have or c.sha256 in fresh:   # the same bytes under another name (epoch_latest.pt == epoch_3.pt)
            if read_from != p and not _in_use(h, read_from, fresh):
                read_from.unlink(missing_ok=True)     # no second copy of a checkpoint already measured
                read_from.with_suffix(".json").unlink(missing_ok=True)
            continue
        if c.step is None and c.epoch is None:
            log.info("training %s: %s gives no step or epoch (name or metadata): not a point of the trajectory",
                     t.label, p.name)
            store.record_ignored(h, t.training_id, c)
            continue
        fresh[c.sha256] = (c, read_from)
    measured = {sha: r for sha, r in have.items() if r["status"] == "measured"}
    order = [(sha, float(r["step"] if r["step"] is not None else r["epoch"]), r["name"]) for sha, r in measured.items()]
    order += [(sha, c.order, c.path.name) for sha, (c, _) in fresh.items()]
    if finished is None:
        newest = max((f.stat().st_mtime for f in files if f.exists()), default=None)
        finished = newest is not None and time.time() - newest >= finished_after
    full = full_points(order, t.full_at, finished)
    todo = [(fresh[sha][0], fresh[sha][1]) for sha in sorted(fresh, key=lambda s: fresh[s][0].order)]
    todo += [(_from_row(measured[sha]), Path(_read_path(h, measured[sha]))) for sha in sorted(full)
             if sha in measured and measured[sha]["measure"] != "full"]
    for c, read_from in todo:
        want = "full" if c.sha256 in full else "light"
        unit = f"track-{t.training_id}-{c.sha256[:12]}"
        with locks.claim(h, unit, on_wait=lambda info, u=unit: log.info(
                "%s is being measured by pid %s: waiting to reuse it", u, info.get("pid"))):
            row = store.points(h, t.training_id).get(c.sha256)
            if row and row["status"] == "rejected":
                continue
            if row and row["status"] == "measured" and (row["measure"] == "full" or want == "light"):
                out["reused"] += 1
                continue
            try:
                _readable(read_from)
            except ValueError as exc:
                _reject(h, t, c, f"cannot read checkpoint: {exc}", out, log)
                continue
            try:
                run_id = embed_flow(t.model_name, t.dataset_id, str(read_from), home=str(h.root), device=device)
            except Exception as exc:  # noqa: BLE001
                _reject(h, t, c, f"cannot embed with {t.model_name}: {type(exc).__name__}: {exc}", out, log)
                continue
            kind = _measure(h, run_id, want, log)
            store.record_point(h, t.training_id, c, run_id, kind)
            out[kind].append(run_id)
            log.info("training %s: %s (step %s, epoch %s) measured (%s) as run %s", t.label, c.path.name, c.step,
                     c.epoch, kind, run_id)
    return out


def _in_use(h: DataHome, snap: Path, fresh: dict) -> bool:
    """Whether a snapshot file is what a run was embedded from, or is about to be."""
    from clipgeo.store import catalog

    if any(rf == snap for _, rf in fresh.values()):
        return True
    with catalog.session(h) as con:
        return bool(catalog.execute(con, "SELECT 1 FROM models WHERE pretrained = ?", [str(snap)]))


def _state(p: Path):
    from clipgeo.tracking import FileState

    return FileState.of(p)


def _sha_or_blank(p: Path) -> str:
    from clipgeo.models.train import sha256_file

    try:
        return sha256_file(p)
    except OSError:
        return "unreadable-" + p.name


def _reject(h: DataHome, t: store.Training, c: Candidate, reason: str, out: dict, log) -> None:
    store.record_reject(h, t, c, reason)
    out["rejected"].append(str(c.path))
    log.warning("training %s: %s rejected (the others go on): %s", t.label, c.path.name, reason[:300])


def _from_row(r: dict) -> Candidate:
    from clipgeo.tracking import FileState

    mtime = r["mtime"]
    return Candidate(Path(r["path"]), r["checkpoint_sha256"], FileState(int(r["size_bytes"] or 0),
                     int(mtime.timestamp() * 1e9) if mtime else 0), r["step"], r["epoch"], r["position_from"])


def _read_path(h: DataHome, r: dict) -> str:
    """Where a measured point's bytes are: its run's model path (the snapshot for latest files)."""
    from clipgeo.store import catalog

    with catalog.session(h) as con:
        found = catalog.execute(con, "SELECT m.pretrained FROM runs r JOIN models m USING (model_id) WHERE r.run_id = ?",
                                [r["run_id"]])
    return found[0][0] if found and found[0][0] else r["path"]


def _measure(h: DataHome, run_id: str, want: str, log) -> str:
    """Measure a point (light or full) unless its stored measurement serves; returns what it holds."""
    from clipgeo.stages.freshness import measure_if_stale
    from clipgeo.stages.measure import all_sections
    from clipgeo.store import catalog

    sections = list(LIGHT_SECTIONS) if want == "light" else None
    res, why = measure_if_stale(h, run_id, sections=sections, on_wait=lambda info: log.info(
        "run %s is being measured by pid %s: waiting to reuse it", run_id, info.get("pid")))
    log.info("run %s: %s", run_id, why)
    with catalog.session(h) as con:
        state = catalog.stage_state(con, f"measure:{run_id}") or {}
    kind = "light" if "sections" in state else "full"
    if kind == "light" and res is not None:
        store.note_light(h, run_id, [s.name for s in all_sections() if s.name not in LIGHT_SECTIONS], LIGHT_WHY)
    return kind


@flow(name="clipgeo-track", log_prints=True)
def track_flow(
    checkpoint_dir: str | None = None,
    arch: str | None = None,
    dataset: str | None = None,
    home: str | None = None,
    full: list[str] = [],  # noqa: B006 (Prefect shows it in the UI)
    label: str | None = None,
    settle_seconds: float = 10.0,
    finished_after: float = 3600.0,
    device: str | None = None,
    make_report: bool = True,
) -> dict:
    """Measure each new checkpoint of a training (or of every registered training).

    Args:
        checkpoint_dir: the folder the training writes checkpoints into (open_clip's
            ``logs/<name>``, clipgeo's ``--save-every`` folder, any folder of ``*.pt`` whose
            name or metadata gives a step or epoch); registered as a training. Default: every
            training registered before (what the scheduled ``track`` deployment does).
        arch: the open_clip architecture of the checkpoints (with ``checkpoint_dir``).
        dataset: the registered evaluation set every checkpoint is measured on (with ``checkpoint_dir``).
        home: data home (default ``$CLIPGEO_HOME`` or ``./clipgeo-data``).
        full: checkpoints that get the full suite besides the first and the last (file names,
            steps or epochs, sha256 prefixes).
        label: the training's name on the trajectory page (default: the folder's name).
        settle_seconds: a file is read once its size and mtime were unchanged this long.
        finished_after: the training counts as finished (its last checkpoint then gets the
            full suite) when no checkpoint changed for this many seconds.
        device: ``cuda`` / ``cpu`` for embedding (default: CUDA when present).
        make_report: rewrite the trajectory page, the full points' reports and the index.
    """
    h = check_track(checkpoint_dir, arch, dataset, home, settle_seconds, finished_after).ensure()
    log = get_run_logger()
    if checkpoint_dir is not None:
        tracked = [store.register_training(h, Path(checkpoint_dir).expanduser(), arch, dataset, label=label,
                                           full_at=full)]
    else:
        tracked = store.trainings(h)
        if not tracked:
            log.info("no training registered in %s: run clipgeo track CHECKPOINT_DIR --arch NAME --dataset ID once",
                     h.root)
    results = [track_training(h, t, settle_seconds=settle_seconds, finished_after=finished_after, device=device)
               for t in tracked]
    paths = write_track_reports(h, results) if make_report else []
    summary = {"trainings": results, "reports": paths, "analysis_version": ANALYSIS_VERSION}
    log.info("tracked %d trainings: %s", len(results), "; ".join(
        f"{r['training_id']}: {len(r['light'])} light, {len(r['full'])} full, {len(r['rejected'])} rejected, "
        f"{len(r['pending'])} still being written" for r in results))
    return summary


def track_trained(h: DataHome, trained: list[tuple[str, str]], dataset_id: str, *, device: str | None = None,
                  make_report: bool = True) -> list[dict]:
    """The pipeline's hook: track the tiny trainings it just ran (``(objective, checkpoint)``
    pairs, trained with ``save_every``) on its evaluation set, as finished trainings (their
    last point is the final checkpoint the pipeline measured already: the same bytes, the same
    run); then write the trajectory page and the full points' reports (the index follows)."""
    from clipgeo.models.train import intermediate_dir

    results = []
    for variant, ckpt in trained:
        folder = intermediate_dir(Path(ckpt))
        if not folder.is_dir():
            continue
        t = store.register_training(h, folder, "clipgeo-tiny-vit", dataset_id, label=f"{variant} (clipgeo run)")
        results.append(track_training(h, t, settle_seconds=0.0, finished=True, device=device))
    if make_report and results:
        from dashboards.build import write_reports
        from dashboards.trajectory import write_trajectory

        write_trajectory(h)
        for r in results:
            for run in r["full"]:
                write_reports(h, [run])
    return results


def write_track_reports(h: DataHome, results: list[dict]) -> list[str]:
    """The trajectory page, the reports of the points measured fully now, and the index."""
    from dashboards.build import write_index, write_reports
    from dashboards.trajectory import write_trajectory

    if not any(r["light"] or r["full"] or r["rejected"] for r in results) and (h.reports / "trajectory.html").exists():
        return []
    out = [str(write_trajectory(h))]
    full = [run for r in results for run in r["full"]]
    if full:
        out += [str(p) for p in write_reports(h, full)]
    else:
        out.append(str(write_index(h)))
    return out
