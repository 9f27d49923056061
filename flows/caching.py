"""Prefect cache keys built from what really determines each stage's output.

Each key combines the stage's identity (data home, dataset id, trainer spec, run id,
parameters), the code version, and for measuring the Lance version of the run's committed
vectors (a re-embed changes it). Keys never depend on the state the task itself writes,
or a task's own run would invalidate its key. Flows check after a cache hit that the
stored result is still there (:func:`checkpoint_present`, :func:`analysis_current`) and
redo the stage if someone removed it. A forced re-run passes ``refresh_cache=True``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import clipgeo
from clipgeo.config import ANALYSIS_VERSION, DataHome
from clipgeo.store import catalog, vectors

STAGES = ("source", "train", "embed", "measure", "report")


def _key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def train_key(context: Any, p: dict[str, Any]) -> str:
    """Trainer spec + training dataset + trainer version + data home."""
    from clipgeo.models.train import TRAINER_VERSION, TrainSpec

    h = DataHome.resolve(p["home"])
    spec = TrainSpec(objective=p["objective"], hopfield=p["hopfield"], steps=p["steps"], seed=p["seed"])
    return _key("train", str(h.root), p["dataset_id"], spec.key(p["dataset_id"]), TRAINER_VERSION)


def measure_key(context: Any, p: dict[str, Any]) -> str:
    """Run id + the committed vectors' Lance version + analysis and code versions."""
    h = DataHome.resolve(p["home"])
    run_id = p["run_id"]
    from clipgeo.stages.measure import find_reference_run

    ref = find_reference_run(h, run_id)
    return _key("measure", str(h.root), run_id, vectors.table_version(h, run_id), ref,
                vectors.table_version(h, ref) if ref else None, bool(p.get("umap_grid")), ANALYSIS_VERSION,
                clipgeo.__version__)


def checkpoint_present(path: str) -> bool:
    """A finished checkpoint: the weights and the sidecar the trainer writes last."""
    from pathlib import Path

    p = Path(path)
    return p.exists() and p.with_suffix(".json").exists()


def analysis_current(home: str, run_id: str) -> bool:
    """The run's tables are stored and were made by this analysis version."""
    with catalog.session(DataHome.resolve(home)) as con:
        found = catalog.execute(con, "SELECT status, analysis_version FROM runs WHERE run_id = ?", [run_id])
    return bool(found) and found[0] == ("measured", ANALYSIS_VERSION)
