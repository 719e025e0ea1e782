"""Real services on 127.0.0.1 for integration tests and benchmarks: a PostgreSQL cluster in a directory, a
`prefect server start` (its services on), Prefect workers, a Dask scheduler and workers.

Each process starts in its own session and is stopped with its whole process group, so nothing it started
(a flow-run process, a Dask nanny's worker) outlives it. Logs go to files under the caller's directory.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, tail: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def stop(self) -> None:
        stop_group(self.proc)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left of it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children of an exited leader may still hold the group
    except ProcessLookupError:
        pass
    proc.wait(timeout=20)


def wait_until_answering(service: Service, url: str, timeout: float, what: str) -> None:
    """Poll `url` until it answers 200; fail at once, with its log, if `service` exits meanwhile."""

    def answers() -> bool:
        assert service.alive(), f"{service.name} exited:\n{service.output()}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(answers, timeout, what)


def start(name: str, cmd: list[str], env: dict[str, str], logdir: Path, cwd: Path = REPO) -> Service:
    log = logdir / f"{name}.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    return Service(name, proc, log)


def run(cmd: list[str], env: dict[str, str], timeout: float = 120, cwd: Path = REPO, check: bool = True) -> str:
    """Run a command to completion (its process group is killed at the timeout); its output."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        out, _ = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} did not finish in {timeout} s:\n{out[-4000:]}") from None
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-4000:]}")
    return out


# ---------------------------------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    directory: Path
    port: int
    pg_ctl: str
    as_owner: list[str]

    def url(self, driver: str = "asyncpg", database: str = "postgres") -> str:
        """SQLAlchemy URL: `asyncpg` for Prefect's server, `psycopg` for Optuna."""
        return f"postgresql+{driver}://daf@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, driver: str = "psycopg") -> str:
        """A new, empty database `name` in this cluster (e.g. one Optuna study store per test); its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(host="127.0.0.1", port=self.port, user="daf", dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(driver, name)

    def stop(self) -> None:
        subprocess.run(
            [*self.as_owner, self.pg_ctl, "-D", str(self.directory / "data"), "-m", "fast", "stop"],
            capture_output=True,
            timeout=60,
        )


def postgres_bin() -> Path | None:
    """Debian's server binaries (scripts/install_test_services.sh installs them), newest version first."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def start_postgres(directory: Path) -> Postgres:
    """A throwaway cluster in `directory`, listening on 127.0.0.1 only (trust auth: user `daf`, no password)."""
    binaries = postgres_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL server binaries not found: run scripts/install_test_services.sh (as root)")
    directory.mkdir(parents=True, exist_ok=True)
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: the cluster belongs to Debian's postgres user
        shutil.chown(directory, "postgres")
        directory.chmod(0o700)
        for parent in directory.parents:  # the owner must be able to reach the directory
            if parent.stat().st_mode & 0o011 != 0o011:
                parent.chmod(parent.stat().st_mode | 0o011)
        as_owner = ["runuser", "-u", "postgres", "--"]
    data = directory / "data"
    subprocess.run(
        [*as_owner, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "daf", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    # fsync off: a test database needs no durability, and fsyncs would dominate its latency.
    options = f"-p {port} -k {directory} -h 127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(
        [
            *as_owner,
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(directory / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return Postgres(directory, port, str(binaries / "pg_ctl"), as_owner)


# ------------------------------------------------------------------------------------------------------- Prefect


def prefect_env(home: Path, api_url: str | None = None, database_url: str | None = None) -> dict[str, str]:
    """This process's environment without any PREFECT_/DAF_ setting, plus a private PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DAF_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_LOCAL_STORAGE_PATH=str(home / "storage"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        COLUMNS="200",  # rich wraps a run's UUID on narrow terminals
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    return env


@dataclass
class PrefectServer:
    service: Service
    api_url: str
    env: dict[str, str]  # for clients of this server: PREFECT_API_URL set

    def stop(self) -> None:
        self.service.stop()


def start_prefect_server(directory: Path, database_url: str | None = None, timeout: float = 120) -> PrefectServer:
    """`prefect server start` with its services (scheduler included) on SQLite in `directory` or `database_url`."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    database_url = database_url or f"sqlite+aiosqlite:///{directory / 'server.db'}"
    # PREFECT_UI_API_URL: the UI served on a port other than 4200 must call this port (see deployments/README.md).
    env = prefect_env(directory / "home", database_url=database_url) | {"PREFECT_UI_API_URL": api}
    service = start(
        "prefect-server",
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        directory,
        cwd=directory,
    )
    wait_until_answering(service, f"{api}/health", timeout, "the Prefect server to become healthy")
    return PrefectServer(service, api, prefect_env(directory / "client-home", api_url=api))


def start_worker(name: str, pool: str, env: dict[str, str], logdir: Path) -> Service:
    """A process worker polling `pool` every second (Prefect's default is 10 s; only the latency differs)."""
    return start(
        name,
        [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--name", name],
        env | {"PREFECT_WORKER_QUERY_SECONDS": "1"},
        logdir,
    )


# ------------------------------------------------------------------------------------------------ Object storage


@dataclass
class S3Server:
    service: Service
    endpoint: str
    env: dict[str, str]  # what an S3 client (s3fs, boto3) needs to reach it: endpoint and test credentials

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, **_s3_credentials(self.env))
        client.create_bucket(Bucket=name)

    def stop(self) -> None:
        self.service.stop()


def _s3_credentials(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def start_s3(directory: Path) -> S3Server:
    """moto's S3-compatible server (`moto_server`, from PyPI) on 127.0.0.1; its credentials are placeholders."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    service = start("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], dict(os.environ), directory)
    wait_until_answering(service, f"{endpoint}/moto-api/", 60, "the S3 server to answer")
    env = {
        "AWS_ACCESS_KEY_ID": "daf-test",
        "AWS_SECRET_ACCESS_KEY": "daf-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": endpoint,
    }
    return S3Server(service, endpoint, env)


# ---------------------------------------------------------------------------------------------------------- Dask


def start_dask(directory: Path, env: dict[str, str], workers: int = 1) -> tuple[str, list[Service]]:
    """A Dask scheduler and `workers` single-threaded workers on 127.0.0.1; returns (address, services)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = start(
        "dask-scheduler",
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        env,
        directory,
    )
    services = [scheduler]
    for i in range(workers):
        services.append(
            start(
                f"dask-worker-{i}",
                [
                    str(BIN / "dask"),
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                    "--name",
                    f"worker-{i}",
                ],
                env,
                directory,
            )
        )
    from distributed import Client

    def ready() -> bool:
        assert scheduler.alive(), scheduler.output()
        try:
            with Client(address, timeout=5) as client:
                return len(client.scheduler_info()["workers"]) == workers
        except OSError:
            return False

    wait_for(ready, 90, f"{workers} Dask worker(s) to join {address}", interval=1.0)
    return address, services


class Runs:
    """Creating flow runs as users do (`prefect deployment run`) and reading them back from the server."""

    def __init__(self, server: PrefectServer):
        self.server = server

    def create(self, deployment: str, parameters: dict, job_variables: dict | None = None) -> str:
        """A flow run of `deployment`, with `job_variables` overriding the work pool's for this run only."""
        overrides = [f"--job-variable={key}={json.dumps(value)}" for key, value in (job_variables or {}).items()]
        out = run(
            [str(BIN / "prefect"), "deployment", "run", deployment, "--params", json.dumps(parameters), *overrides],
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

    def wait_final(self, flow_run_id: str, timeout: float, worker: Service | None = None):
        def final():
            if worker is not None:
                assert worker.alive(), f"worker exited:\n{worker.output()}"
            run = self.read(flow_run_id)
            return run if run.state is not None and run.state.is_final() else None

        return wait_for(final, timeout, f"flow run {flow_run_id} to finish", interval=1.0)

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

        return wait_for(settled, 60, f"the logs of flow run {flow_run_id} to settle", interval=0)

    def logs(self, flow_run_id: str, min_level: int = 0) -> list[str]:
        """The run's log messages at `min_level` or above, oldest first."""
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel
        from prefect.client.schemas.sorting import LogSort

        flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]), level=LogFilterLevel(ge_=min_level))
        with self.client() as client:
            records = client.read_logs(log_filter=flt, sort=LogSort.TIMESTAMP_ASC)
        return [r.message for r in records]
