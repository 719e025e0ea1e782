"""One production-shaped Prefect stack for the integration tests: PostgreSQL, `prefect server start` with its
services on, every deployment of deployments/prefect.yaml applied by deploy.sh, and a process worker on daf-local
started the way deployments/README.md says (no DAF_HOME)."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    service = stack.start_worker("daf-local-worker", "daf-local", deployed.env, stack_dir)
    yield service
    service.stop()


class Runs:
    """Creating flow runs as users do (`prefect deployment run`) and reading them back from the server."""

    def __init__(self, server: stack.PrefectServer):
        self.server = server

    def create(self, deployment: str, parameters: dict) -> str:
        out = stack.run(
            [str(stack.BIN / "prefect"), "deployment", "run", deployment, "--params", json.dumps(parameters)],
            self.server.env,
            timeout=90,
        )
        return re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)

    @contextmanager
    def client(self):
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.server.api_url}), get_client(sync_client=True) as client:
            yield client

    def read(self, flow_run_id: str):
        with self.client() as client:
            return client.read_flow_run(flow_run_id)

    def wait_final(self, flow_run_id: str, timeout: float, worker: stack.Service | None = None):
        def final():
            if worker is not None:
                assert worker.alive(), f"worker exited:\n{worker.output()}"
            run = self.read(flow_run_id)
            return run if run.state is not None and run.state.is_final() else None

        return stack.wait_for(final, timeout, f"flow run {flow_run_id} to finish", interval=1.0)

    def settled_logs(self, flow_run_id: str, quiet_seconds: float = 3.0) -> list[str]:
        """The run's log messages once no new one has arrived for `quiet_seconds` (the flow-run process sends
        its records in batches, some after the final state)."""
        last: list[list[str]] = [self.logs(flow_run_id)]

        def settled() -> list[str] | None:
            time.sleep(quiet_seconds)
            now = self.logs(flow_run_id)
            if now == last[0]:
                return now
            last[0] = now
            return None

        return stack.wait_for(settled, 60, f"the logs of flow run {flow_run_id} to settle", interval=0)

    def logs(self, flow_run_id: str) -> list[str]:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
        from prefect.client.schemas.sorting import LogSort

        with self.client() as client:
            records = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), sort=LogSort.TIMESTAMP_ASC
            )
        return [r.message for r in records]


@pytest.fixture(scope="session")
def runs(deployed: stack.PrefectServer) -> Runs:
    return Runs(deployed)
