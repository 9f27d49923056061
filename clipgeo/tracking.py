"""Following a training run checkpoint by checkpoint: which files are checkpoints, where each
sits in its training, whether it is finished being written, and its content hash.

Pure functions over a folder (no Prefect, no catalog); ``flows/track.py`` orchestrates them.

Layouts found (searched recursively under the folder given):

- open_clip's training output: ``logs/<name>/checkpoints/epoch_<N>.pt`` and
  ``epoch_latest.pt`` (a dict with ``epoch``, ``state_dict``, ``optimizer``);
- clipgeo's trainer (``clipgeo run --save-every N``): ``<checkpoints>/<model>-<objective>-<key>/
  step_<N>.pt``, each with its JSON sidecar and a ``clipgeo`` entry holding ``step``;
- any other ``*.pt`` whose file name (``step_1200``, ``step1200``, ``epoch_3``, ``ep3``) or
  metadata (``step`` / ``global_step`` / ``epoch`` in the checkpoint's top-level dict or its
  ``clipgeo`` entry, or in a ``<name>.json`` sidecar) gives a step or an epoch.

A file still being written is never read: it is *settled* only when its size and mtime did
not change over ``settle_seconds`` and its mtime is at least that old (:func:`settled`);
temporary names of atomic writers (``.name.tmp-…``, ``*.tmp``, ``*.part``) are ignored, so
a trainer that writes then renames is picked up after its rename. A checkpoint is identified
by its sha256 (as every clipgeo run is): ``epoch_latest.pt`` overwritten in place is a new
checkpoint, and :func:`snapshot` copies such a file into the data home while hashing it, so
the bytes that are embedded are the bytes that were hashed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Candidate", "FileState", "ChangedWhileReading", "find_checkpoints", "position_from_name",
           "position_from_meta", "settled", "hash_settled", "snapshot", "training_id_for", "is_overwritten_name",
           "full_points"]

_TMP = re.compile(r"(^\.)|(\.tmp(-\d+)?$)|(\.part$)|(\.partial$)|(\.incomplete$)", re.I)
_STEP = re.compile(r"(?:^|[^a-z])(?:global_?)?(?:step|iter|iteration)s?[_-]?(\d+)(?:[^0-9]|$)", re.I)
_EPOCH = re.compile(r"(?:^|[^a-z])(?:epoch|ep)[_-]?(\d+)(?:[^0-9]|$)", re.I)


@dataclass(frozen=True)
class FileState:
    """What ``stat`` says of a file: size and modification time (ns)."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> "FileState":
        st = Path(path).stat()
        return cls(st.st_size, st.st_mtime_ns)


class ChangedWhileReading(RuntimeError):
    """The file's size or mtime changed while it was hashed or copied: still being written."""


@dataclass(frozen=True)
class Candidate:
    """A settled checkpoint file with its content hash and its position in the training."""

    path: Path
    sha256: str
    state: FileState
    step: int | None
    epoch: float | None
    position_from: str   # "name" | "metadata"

    @property
    def order(self) -> float:
        """Where the point sits on the trajectory: its step, else its epoch."""
        return float(self.step if self.step is not None else self.epoch if self.epoch is not None else -1)


def find_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """Every ``*.pt`` under ``folder`` (recursively), without hidden or temporary files.

    Parameters
    ----------
    folder : path
        The training's output folder (open_clip's ``logs/<name>``, its ``checkpoints``, or any).

    Returns
    -------
    list of Path
        Sorted paths.

    Examples
    --------
    >>> import tempfile; from pathlib import Path
    >>> d = Path(tempfile.mkdtemp()); (d / "checkpoints").mkdir()
    >>> for n in ("epoch_1.pt", "epoch_latest.pt", ".epoch_2.pt.tmp-7", "notes.txt"):
    ...     _ = (d / "checkpoints" / n).write_bytes(b"x")
    >>> [p.name for p in find_checkpoints(d)]
    ['epoch_1.pt', 'epoch_latest.pt']
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"checkpoint folder {root} is not a directory (pass the training's output folder)")
    out = []
    for p in root.rglob("*.pt"):
        rel = p.relative_to(root).parts
        if any(part.startswith(".") for part in rel) or _TMP.search(p.name) or not p.is_file():
            continue
        out.append(p)
    return sorted(out)


def position_from_name(name: str) -> tuple[int | None, float | None]:
    """(step, epoch) as the file name gives them, each None when it does not.

    Examples
    --------
    >>> position_from_name("epoch_3.pt"), position_from_name("step_000200.pt"), position_from_name("epoch_latest.pt")
    ((None, 3.0), (200, None), (None, None))
    >>> position_from_name("ckpt-ep2-step1500.pt")
    (1500, 2.0)
    """
    stem = Path(name).stem
    s, e = _STEP.search(stem), _EPOCH.search(stem)
    return (int(s.group(1)) if s else None), (float(e.group(1)) if e else None)


def _position_in(meta: Any) -> tuple[int | None, float | None]:
    if not isinstance(meta, dict):
        return None, None
    step = next((meta[k] for k in ("step", "global_step") if isinstance(meta.get(k), int)), None)
    epoch = meta.get("epoch") if isinstance(meta.get("epoch"), (int, float)) else None
    inner = meta.get("clipgeo")
    if isinstance(inner, dict):
        s2, e2 = _position_in(inner)
        if s2 is None and isinstance(inner.get("steps"), int) and "key" in inner:
            s2 = inner["steps"]       # a clipgeo final checkpoint from before step was recorded: all its steps
        step, epoch = step if step is not None else s2, epoch if epoch is not None else e2
    return step, (float(epoch) if epoch is not None else None)


def position_from_meta(path: str | os.PathLike[str]) -> tuple[int | None, float | None]:
    """(step, epoch) from a checkpoint's metadata: its ``<name>.json`` sidecar, else the
    checkpoint's top-level dict (read memory-mapped, weights only). (None, None) when neither
    says; raises when the file cannot be read as a checkpoint at all.

    Examples
    --------
    >>> import tempfile, torch; from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "epoch_latest.pt"
    >>> torch.save({"epoch": 4, "state_dict": {"w": torch.zeros(2)}}, p)
    >>> position_from_meta(p)
    (None, 4.0)
    """
    path = Path(path)
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError):
            meta = None
        if isinstance(meta, dict):
            s, e = _position_in({"clipgeo": meta} if "key" in meta else meta)
            if s is not None or e is not None:
                return s, e
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return _position_in(obj)


def is_overwritten_name(name: str) -> bool:
    """Names a trainer rewrites in place (``epoch_latest.pt``, ``last.pt``): snapshot before reading."""
    stem = Path(name).stem.lower()
    return "latest" in stem or stem in ("last", "checkpoint", "model")


def settled(paths: Sequence[Path], settle_seconds: float, *, sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.time) -> tuple[dict[Path, FileState], list[Path]]:
    """Which files are finished being written: (settled {path: state}, still changing).

    A file is settled when its size and mtime are the same before and after a wait of
    ``settle_seconds`` (waited only when some file is younger than that) and its mtime is at
    least ``settle_seconds`` old. A file that vanished meanwhile is neither.

    Examples
    --------
    >>> import tempfile; from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "a.pt"; _ = p.write_bytes(b"x")
    >>> ready, busy = settled([p], 0.0)
    >>> list(ready) == [p] and busy == []
    True
    """
    def stat(p: Path) -> FileState | None:
        try:
            return FileState.of(p)
        except FileNotFoundError:
            return None

    first = {p: stat(p) for p in paths}
    now = clock()
    ages = [now - s.mtime_ns / 1e9 for s in first.values() if s is not None]
    if ages and min(ages) < settle_seconds:
        sleep(settle_seconds)
    now = clock()
    ready: dict[Path, FileState] = {}
    busy: list[Path] = []
    for p, s in first.items():
        again = stat(p)
        if s is None or again is None:
            continue
        if again == s and now - again.mtime_ns / 1e9 >= settle_seconds:
            ready[p] = again
        else:
            busy.append(p)
    return ready, busy


def _copy_hash(src: Path, dest: Path | None, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    out = open(dest, "wb") if dest is not None else None
    try:
        with open(src, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
                if out is not None:
                    out.write(block)
    finally:
        if out is not None:
            out.close()
    return h.hexdigest()


def hash_settled(path: Path, state: FileState) -> str:
    """sha256 of a settled file; raises :class:`ChangedWhileReading` when it changed meanwhile.

    Examples
    --------
    >>> import tempfile; from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "a.pt"; _ = p.write_bytes(b"abc")
    >>> hash_settled(p, FileState.of(p))[:12]
    'ba7816bf8f01'
    """
    digest = _copy_hash(path, None)
    if FileState.of(path) != state:
        raise ChangedWhileReading(f"{path} changed while it was hashed (still being written): read on the next pass")
    return digest


def snapshot(path: Path, state: FileState, dest_dir: Path) -> tuple[Path, str]:
    """Copy a settled file into ``dest_dir`` while hashing it: (``<sha12>-<name>``, sha256).

    The copy holds exactly the hashed bytes, so a trainer rewriting ``path`` later (as
    open_clip does with ``epoch_latest.pt``) cannot change what is embedded under that hash.
    Raises :class:`ChangedWhileReading` (and keeps no copy) when the file changed meanwhile.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{path.name}.tmp-{os.getpid()}"
    try:
        digest = _copy_hash(path, tmp)
        if FileState.of(path) != state:
            raise ChangedWhileReading(f"{path} changed while it was copied (still being written): read on the next pass")
        final = dest_dir / f"{digest[:12]}-{path.name}"
        side = path.with_suffix(".json")
        if side.is_file():
            shutil.copyfile(side, final.with_suffix(".json"))
        os.replace(tmp, final)
        return final, digest
    finally:
        tmp.unlink(missing_ok=True)


def training_id_for(folder: str | os.PathLike[str], model_name: str, dataset_id: str) -> str:
    """``t`` + 12 hex digits of a hash of the folder (absolute), architecture and evaluation set.

    Examples
    --------
    >>> training_id_for("/runs/a", "ViT-B-32", "coco:val") == training_id_for("/runs/a/", "ViT-B-32", "coco:val")
    True
    """
    key = f"{os.path.abspath(os.fspath(folder))}|{model_name}|{dataset_id}"
    return "t" + hashlib.sha1(key.encode()).hexdigest()[:12]


def full_points(points: Iterable[tuple[str, float, str]], named: Sequence[str], finished: bool) -> set[str]:
    """The checkpoints that get the full suite: the first, the last once the training is
    finished, and those the user named (by file name, step or epoch number, or sha256 prefix).

    ``points``: (sha256, order, file name) of every measured or measurable checkpoint.

    Examples
    --------
    >>> pts = [("aa11", 0.0, "step_0.pt"), ("bb22", 100.0, "step_100.pt"), ("cc33", 200.0, "step_200.pt")]
    >>> sorted(full_points(pts, [], finished=False)), sorted(full_points(pts, ["step_100.pt"], finished=True))
    (['aa11'], ['aa11', 'bb22', 'cc33'])
    """
    pts = sorted(points, key=lambda p: (p[1], p[2]))
    out: set[str] = set()
    if pts:
        out.add(pts[0][0])
        if finished:
            out.add(pts[-1][0])
    names = {str(n) for n in named}
    for sha, order, name in pts:
        num = f"{order:g}"
        if name in names or Path(name).stem in names or num in names or any(len(n) >= 8 and sha.startswith(n)
                                                                             for n in names):
            out.add(sha)
    return out
