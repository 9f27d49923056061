"""Shared fixtures. Prefect runs against a temporary test server (one per session)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("LANCEDB_LOG", "error")


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
