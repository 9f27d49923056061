"""The catalog side of a tracked training (tables ``trainings`` and ``training_checkpoints``,
``sql/schema/014_trainings.sql``): register a training, tell which files were already read,
record a measured point or a rejected checkpoint.

No Prefect: ``flows/track.py`` calls these between the embed and measure stages.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clipgeo.core.config import ANALYSIS_VERSION, DataHome
from clipgeo.store import catalog
from clipgeo.tracking import Candidate, FileState, training_id_for

from clipgeo.stages.measure import STREAMED_SECTIONS

#: The sections of a trajectory point: the streamed ones (retrieval, modality gap, double
#: ellipsoid, spectra: every vector) and separability (on the hash sample, cheap), which give
#: every headline figure but the UMAP-based ones (mixing, clusters).
LIGHT_SECTIONS: tuple[str, ...] = tuple(sorted(STREAMED_SECTIONS | {"separability"}))

__all__ = ["LIGHT_SECTIONS", "Training", "register_training", "trainings", "known_files", "points", "record_point",
           "record_reject", "record_ignored", "measured_sections", "note_light"]


@dataclass(frozen=True)
class Training:
    """A training followed checkpoint by checkpoint: its folder, architecture and evaluation set."""

    training_id: str
    checkpoint_dir: str
    model_name: str
    dataset_id: str
    label: str
    full_at: tuple[str, ...] = ()


def register_training(home: DataHome, checkpoint_dir: str | os.PathLike[str], model_name: str, dataset_id: str, *,
                      label: str | None = None, full_at: Sequence[str] = ()) -> Training:
    """Add (or update) a training's row; returns it. Its id: :func:`clipgeo.tracking.training_id_for`.

    Parameters
    ----------
    home : DataHome
        The data home.
    checkpoint_dir : path
        The folder the training writes its checkpoints into.
    model_name : str
        The open_clip architecture of the checkpoints.
    dataset_id : str
        The registered evaluation set every checkpoint is measured on.
    label : str, optional
        A name for the charts (default: the folder's name, with the architecture).
    full_at : sequence of str
        Checkpoints (file names, steps or epochs, sha256 prefixes) that get the full suite.

    Returns
    -------
    Training

    Examples
    --------
    >>> import tempfile
    >>> h = DataHome.resolve(tempfile.mkdtemp()).ensure()
    >>> t = register_training(h, "/runs/a", "ViT-B-32", "coco:val")
    >>> t.label, [x.training_id for x in trainings(h)] == [t.training_id]
    ('a (ViT-B-32)', True)
    """
    folder = os.path.abspath(os.fspath(checkpoint_dir))
    tid = training_id_for(folder, model_name, dataset_id)
    with catalog.session(home) as con, catalog.transaction(con):
        found = catalog.execute(con, "SELECT label, full_at, created_at FROM trainings WHERE training_id = ?", [tid])
        old_label, old_full, created = found[0] if found else (None, None, None)
        label = label or old_label or f"{Path(folder).name} ({model_name})"
        full = tuple(full_at) or tuple(json.loads(old_full) if old_full else ())
        catalog.delete_insert(con, "trainings", {"training_id": tid}, [{
            "training_id": tid, "checkpoint_dir": folder, "model_name": model_name, "dataset_id": dataset_id,
            "label": label, "full_at": json.dumps(list(full)), "created_at": created or dt.datetime.now(),
            "updated_at": dt.datetime.now()}])
    return Training(tid, folder, model_name, dataset_id, label, full)


def trainings(home: DataHome) -> list[Training]:
    """Every registered training (none when the home has no catalog yet).

    Parameters
    ----------
    home : DataHome
        The data home.

    Returns
    -------
    list of Training
        Ordered by label.
    """
    if not home.catalog.exists():
        return []
    with catalog.session(home) as con:
        rows = catalog.execute(con, "SELECT training_id, checkpoint_dir, model_name, dataset_id, label, full_at "
                                    "FROM trainings ORDER BY label")
    return [Training(t, d, m, ds, lab, tuple(json.loads(f) if f else ())) for t, d, m, ds, lab, f in rows]


def _mtime(state: FileState) -> dt.datetime:
    return dt.datetime.fromtimestamp(state.mtime_ns / 1e9)


def known_files(home: DataHome, training_id: str) -> set[tuple[str, int, dt.datetime]]:
    """(path, size, mtime) of every file already read for a training: not hashed again.

    Parameters
    ----------
    home : DataHome
        The data home.
    training_id : str
        The training.

    Returns
    -------
    set of tuple
        :func:`file_key` of each file recorded in ``training_checkpoints``.
    """
    with catalog.session(home) as con:
        rows = catalog.execute(con, "SELECT path, size_bytes, mtime FROM training_checkpoints WHERE training_id = ?",
                               [training_id])
    return {(p, s, m) for p, s, m in rows}


def file_key(path: Path, state: FileState) -> tuple[str, int, dt.datetime]:
    """The key :func:`known_files` holds for a file in this state."""
    return str(path), state.size, _mtime(state)


def points(home: DataHome, training_id: str) -> dict[str, dict]:
    """The training's checkpoints by sha256: their rows of ``training_checkpoints``.

    Parameters
    ----------
    home : DataHome
        The data home.
    training_id : str
        The training.

    Returns
    -------
    dict
        sha256 -> row (column -> value).
    """
    with catalog.session(home) as con:
        df = catalog.query(con, "SELECT * FROM training_checkpoints WHERE training_id = ? ORDER BY found_at",
                           [training_id])
    return {r["checkpoint_sha256"]: r for r in df.to_dicts()}


def _row(training_id: str, c: Candidate, **extra) -> dict:
    return {"training_id": training_id, "checkpoint_sha256": c.sha256, "path": str(c.path), "name": c.path.name,
            "step": c.step, "epoch": c.epoch, "position_from": c.position_from, "size_bytes": c.state.size,
            "mtime": _mtime(c.state), **extra}


def record_point(home: DataHome, training_id: str, c: Candidate, run_id: str, measure: str) -> None:
    """The checkpoint ``c`` is measured as ``run_id`` (``measure``: light | full). Other bytes
    measured before under the same path are ``superseded`` (a retrained step), unless the name
    is one a trainer rewrites as it goes (``epoch_latest.pt``: each version is a point)."""
    from clipgeo.tracking import is_overwritten_name

    with catalog.session(home) as con, catalog.transaction(con):
        if not is_overwritten_name(c.path.name):
            catalog.execute(con, "UPDATE training_checkpoints SET status = 'superseded' WHERE training_id = ?"
                                 " AND path = ? AND checkpoint_sha256 <> ? AND status = 'measured'",
                            [training_id, str(c.path), c.sha256])
        catalog.delete_insert(con, "training_checkpoints", {"training_id": training_id, "checkpoint_sha256": c.sha256},
                              [_row(training_id, c, run_id=run_id, measure=measure, status="measured",
                                    measured_at=dt.datetime.now())])


def record_ignored(home: DataHome, training_id: str, c: Candidate) -> None:
    """A ``*.pt`` whose name and metadata give no step or epoch: remembered so it is not hashed again."""
    with catalog.session(home) as con, catalog.transaction(con):
        catalog.delete_insert(con, "training_checkpoints", {"training_id": training_id, "checkpoint_sha256": c.sha256},
                              [_row(training_id, c, status="ignored")])


def record_reject(home: DataHome, training: Training, c: Candidate, reason: str) -> None:
    """A checkpoint that cannot be read or embedded: one ``rejects`` row (stage ``checkpoint``,
    on the training's evaluation set, taking no image or caption out of it) and its
    ``training_checkpoints`` row marked ``rejected``, so these bytes are not tried again."""
    reason = " ".join(reason.split())[:500] or "unreadable checkpoint"
    with catalog.session(home) as con, catalog.transaction(con):
        catalog.execute(con, "DELETE FROM rejects WHERE dataset_id = ? AND stage = 'checkpoint' AND item_ref = ?"
                             " AND detail = ?", [training.dataset_id, str(c.path), _detail(c)])
        catalog.insert_rejects(con, [{"dataset_id": training.dataset_id, "item_ref": str(c.path), "stage": "checkpoint",
                                      "reason": reason, "run_id": None, "sample_id": None, "image_id": None,
                                      "n_images": 0, "n_captions": 0, "detail": _detail(c)}])
        catalog.delete_insert(con, "training_checkpoints",
                              {"training_id": training.training_id, "checkpoint_sha256": c.sha256},
                              [_row(training.training_id, c, status="rejected")])


def _detail(c: Candidate) -> str:
    return f"checkpoint sha256 {c.sha256[:12]}, {c.state.size} bytes"


def measured_sections(home: DataHome, run_id: str) -> set[str]:
    """The sections with a row in ``measure_sections`` for the run."""
    with catalog.session(home) as con:
        return {s for (s,) in catalog.execute(con, "SELECT section FROM measure_sections WHERE run_id = ?", [run_id])}


def note_light(home: DataHome, run_id: str, sections: Sequence[str], why: str) -> None:
    """State in ``measure_sections`` that the run's other sections were not run (status
    ``skipped`` with ``why``), for sections without a row yet: the reports then say why."""
    have = measured_sections(home, run_id)
    rows = [{"run_id": run_id, "section": s, "status": "skipped", "message": why, "seconds": 0.0, "tables": "",
             "analysis_version": ANALYSIS_VERSION} for s in sections if s not in have]
    if rows:
        with catalog.session(home) as con, catalog.transaction(con):
            catalog.insert(con, "measure_sections", rows)
