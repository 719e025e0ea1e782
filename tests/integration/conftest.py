"""One production-shaped Prefect stack for the integration tests: PostgreSQL, `prefect server start` with its
services on, every deployment of deployments/prefect.yaml applied by deploy.sh, and a process worker on daf-local
started the way deployments/README.md says (no DAF_HOME)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import stack


@pytest.fixture(scope="session")
def stack_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: that is private to root (0700) and the PostgreSQL cluster runs as `postgres`.
    directory = Path(tempfile.mkdtemp(prefix="daf-stack-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(stack_dir: Path) -> Iterator[stack.Postgres]:
    cluster = stack.start_postgres(stack_dir / "pg")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def server(stack_dir: Path, postgres: stack.Postgres) -> Iterator[stack.PrefectServer]:
    srv = stack.start_prefect_server(stack_dir / "server", database_url=postgres.url("asyncpg"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def deployed(server: stack.PrefectServer) -> stack.PrefectServer:
    # Twice (deploy.sh must be idempotent), from a shell whose DAF_HOME names no checkout: nothing of the
    # deploying shell may reach the deployments.
    for _ in range(2):
        stack.run(
            [str(stack.REPO / "deployments" / "deploy.sh")], server.env | {"DAF_HOME": "/not/a/checkout"}, timeout=240
        )
    return server


@pytest.fixture(scope="session")
def worker(deployed: stack.PrefectServer, stack_dir: Path) -> Iterator[stack.Service]:
    # The tests' Dask schedulers listen on 127.0.0.1; the worker names the ones it trusts (daf.worker_settings).
    env = deployed.env | {"DAF_DASK_ADDRESSES": "tcp://127.0.0.1:*"}
    service = stack.start_worker("daf-local-worker", "daf-local", env, stack_dir)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def runs(deployed: stack.PrefectServer) -> stack.Runs:
    return stack.Runs(deployed)
