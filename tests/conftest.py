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
    from clipgeo.config import DataHome

    return DataHome.resolve(tmp_path / "home").ensure()
