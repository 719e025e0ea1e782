"""One Prefect test harness (a real temporary API server and database) for every pipeline test."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    # Results and caches live in a fresh directory: a cache from an earlier test run must never satisfy a test.
    home = tempfile.mkdtemp(prefix="daf-prefect-")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(home, "storage")
    from prefect.settings import (
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_LOGGING_TO_API_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings(
        {PREFECT_LOCAL_STORAGE_PATH: os.path.join(home, "storage"), PREFECT_LOGGING_TO_API_ENABLED: False}
    ):
        with prefect_test_harness(server_startup_timeout=60):
            yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def faults(monkeypatch):
    """Set DAF_FAULTS for one test and forget how often faults fired."""
    from daf import faults as fault_module

    def set_faults(spec: str) -> None:
        monkeypatch.setenv("DAF_FAULTS", spec)
        fault_module.reset()

    yield set_faults
    fault_module.reset()
