"""Load: a comparison of 8 policies x 4 missions with parallel evaluation through a real `prefect server start`,
once per database (SQLite, Prefect's default, and PostgreSQL, what production servers run on), side by side.

Counts task runs and their final states, the WARNING/ERROR records of Prefect's client in this process, and the
WARNING/ERROR lines of the server's own log (database locks, HTTP 5xx). A database passes when the pipeline
succeeds, all 32 evaluations complete and nothing was logged at WARNING or above.

    python bench/load_comparison.py [--episodes 5] [--workers 4] [--databases sqlite postgresql]

PostgreSQL comes from Debian's package (scripts/install_test_services.sh); the cluster lives in a temporary
directory on 127.0.0.1 (tests/integration/stack.py) and is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import stack  # noqa: E402  (the services the integration tests use)

POLICIES = (
    [{"class_path": "baseline", "name": f"baseline-s{s}", "init_kwargs": {"seed": s}} for s in range(3)]
    + [{"class_path": "random", "name": f"random-s{s}", "init_kwargs": {"seed": s}} for s in range(3)]
    + [
        {"class_path": "noop"},
        {"class_path": "mlp", "name": "mlp-untrained"},
    ]
)
MISSIONS = ["training_facility_1", "training_facility_2", "assembler_1", "assembler_2"]
# A server log line at WARNING or above ("12:00:00.000 | ERROR   | prefect.server..."), or a 5xx access line.
_SERVER_PROBLEM = re.compile(r"\|\s*(WARNING|ERROR|CRITICAL)\s*\||\" 5\d\d\b|database is locked")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Task failures are the pipeline's own business (reported in its result); count the infrastructure.
        if record.name.startswith(("prefect.client", "prefect._internal", "httpx", "uvicorn")):
            self.records.append(record)


def run_against(database: str, directory: Path, episodes: int, workers: int) -> dict:
    """One comparison through a fresh server on `database`; its figures."""
    cluster = stack.start_postgres(directory / "pg") if database == "postgresql" else None
    server = stack.start_prefect_server(directory / "server", cluster.url("asyncpg") if cluster else None)
    collector = _Collect()
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

        from daf.orchestrators import daf_run_comparison_pipeline

        logging.getLogger().addHandler(collector)
        settings = {PREFECT_API_URL: server.api_url, PREFECT_LOCAL_STORAGE_PATH: str(directory / "storage")}
        with temporary_settings(settings):
            started = time.perf_counter()
            result = daf_run_comparison_pipeline(
                policies=POLICIES,
                missions=MISSIONS,
                episodes_per_mission=episodes,
                parallel_evaluation=True,
                max_parallel_jobs=workers,
                output_dir=str(directory / "out"),
                use_cache=False,
            )
            wall = time.perf_counter() - started

            async def task_states() -> Counter:
                async with get_client() as client:
                    flt = FlowRunFilter(id=FlowRunFilterId(any_=[result.outputs["flow_run_id"]]))
                    runs = await client.read_task_runs(flow_run_filter=flt)
                return Counter(f"{r.name.split(' ')[0].split('-')[0]}:{r.state.name}" for r in runs)

            states = asyncio.run(task_states())
    finally:
        logging.getLogger().removeHandler(collector)
        server.stop()
        if cluster:
            cluster.stop()
    server_problems = [line for line in server.service.output(tail=10**8).splitlines() if _SERVER_PROBLEM.search(line)]
    ok = result.is_success() and not collector.records and not server_problems and states["evaluation:Completed"] == 32
    return {
        "result": result,
        "wall": wall,
        "states": states,
        "client": collector.records,
        "server": server_problems,
        "ok": ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    root = Path(tempfile.mkdtemp(prefix="daf-load-"))
    root.chmod(0o755)  # the PostgreSQL cluster runs as Debian's postgres user
    figures = {}
    try:
        for database in args.databases:
            figures[database] = run_against(database, root / database, args.episodes, args.workers)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"{len(POLICIES)} policies x {len(MISSIONS)} missions x {args.episodes} episodes, {args.workers} parallel "
        "evaluations, through `prefect server start`"
    )
    names = list(figures)
    print(f"{'':<36}" + "".join(f"{name:>14}" for name in names))
    rows = {
        "pipeline status": [f["result"].status for f in figures.values()],
        "wall seconds": [f"{f['wall']:.1f}" for f in figures.values()],
        **{
            f"task runs {key}": [f["states"].get(key, 0) for f in figures.values()]
            for key in sorted({k for f in figures.values() for k in f["states"]})
        },
        "client warnings/errors": [len(f["client"]) for f in figures.values()],
        "server warnings/errors": [len(f["server"]) for f in figures.values()],
        "verdict": ["PASS" if f["ok"] else "FAIL" for f in figures.values()],
    }
    for label, values in rows.items():
        print(f"{label:<36}" + "".join(f"{value!s:>14}" for value in values))
    for name, f in figures.items():
        for record in f["client"][:5]:
            print(f"  {name} client: {record.levelname} {record.name}: {record.getMessage()[:160]}")
        for line in f["server"][:5]:
            print(f"  {name} server: {line[:200]}")


if __name__ == "__main__":
    main()
