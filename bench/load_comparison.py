"""Load: comparisons of 8 policies x 4 missions with parallel evaluation through a real `prefect server start`,
once per database (SQLite, Prefect's default, and PostgreSQL, what production servers run on), side by side.
`--flows N` runs N such pipelines at once, each in its own process, as several workers or users would.

Counts task runs and their final states, the WARNING/ERROR records of Prefect's client in the pipelines'
processes, and the WARNING/ERROR lines of the server's own log (database locks, HTTP 5xx). A database passes when
every pipeline succeeds, all 32 evaluations of each complete and nothing was logged at WARNING or above.

    python bench/load_comparison.py [--episodes 5] [--workers 4] [--flows 1] [--databases sqlite postgresql]

PostgreSQL comes from Debian's package (scripts/install_test_services.sh); the cluster lives in a temporary
directory on 127.0.0.1 (tests/integration/stack.py) and is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
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


def run_pipeline(api_url: str, directory: Path, episodes: int, workers: int) -> dict:
    """One comparison pipeline in this process against the server at `api_url` (a child of `run_against`)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from daf.orchestrators import daf_run_comparison_pipeline

    collector = _Collect()
    logging.getLogger().addHandler(collector)
    with temporary_settings({PREFECT_API_URL: api_url, PREFECT_LOCAL_STORAGE_PATH: str(directory / "storage")}):
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
        # Send what Prefect's client still holds (logs, events) now, while the server is surely up.
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=60)
        EventsWorker.drain_all(timeout=60)
    logging.getLogger().removeHandler(collector)
    return {
        "status": result.status,
        "errors": result.errors,
        "wall": wall,
        "flow_run_id": result.outputs.get("flow_run_id"),
        "client": [f"{r.levelname} {r.name}: {r.getMessage()[:160]}" for r in collector.records],
    }


def run_against(database: str, directory: Path, episodes: int, workers: int, flows: int) -> dict:
    """`flows` comparison pipelines at once, each its own process, through one fresh server on `database`."""
    cluster = stack.start_postgres(directory / "pg") if database == "postgresql" else None
    server = stack.start_prefect_server(directory / "server", cluster.url("asyncpg") if cluster else None)
    try:
        started = time.perf_counter()
        children = [
            child(["--pipeline", server.api_url], directory / f"flow-{i}", episodes, workers) for i in range(flows)
        ]
        pipelines = [finish(proc) for proc in children]
        wall = time.perf_counter() - started
        states = recorded_task_states(server.api_url, [p["flow_run_id"] for p in pipelines if p["flow_run_id"]])
    finally:
        server.stop()
        if cluster:
            cluster.stop()
    server_problems = [line for line in server.service.output(tail=10**8).splitlines() if _SERVER_PROBLEM.search(line)]
    client = [line for p in pipelines for line in p["client"]]
    evaluations = flows * len(POLICIES) * len(MISSIONS)
    ok = (
        all(p["status"] == "success" for p in pipelines)
        and not client
        and not server_problems
        and states.get("evaluation:Completed") == evaluations
    )
    return {
        "status": ",".join(sorted({p["status"] for p in pipelines})),
        "wall": wall,
        "states": states,
        "client": client,
        "server": [line[:200] for line in server_problems],
        "errors": [e for p in pipelines for e in p["errors"]],
        "ok": ok,
    }


def recorded_task_states(api_url: str, flow_run_ids: list[str]) -> dict[str, int]:
    """Final states of the runs' task runs, once the server has recorded all of them (or after 60 s)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read() -> Counter:
        counts: Counter = Counter()
        async with get_client() as client:
            for flow_run_id in flow_run_ids:  # one flow run's task runs at a time: the API returns 200 at most
                flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
                runs = await client.read_task_runs(flow_run_filter=flt, limit=200)
                counts.update(f"{r.name.split(' ')[0].split('-')[0]}:{r.state.name}" for r in runs)
        return counts

    # Task runs reach the database through the server's event pipeline (its task-run recorder service), shortly
    # after the flows return.
    expected = len(flow_run_ids) * (len(POLICIES) * len(MISSIONS) + 3)  # + validation, statistics, report
    with temporary_settings({PREFECT_API_URL: api_url}):
        try:
            states = stack.wait_for(
                lambda: (c := asyncio.run(read())) and sum(c.values()) >= expected and c,
                timeout=60,
                what="the server to record every task run",
                interval=1.0,
            )
        except AssertionError:
            states = asyncio.run(read())
    return dict(states)


def child(role: list[str], directory: Path, episodes: int, workers: int) -> subprocess.Popen:
    """This script in a fresh Python. Prefect's client-side log and event workers bind to the first API URL a
    process uses, and concurrent flow runs from several processes are the load a shared server sees."""
    cmd = [sys.executable, __file__, *role, "--directory", str(directory), "--episodes", str(episodes),
           "--workers", str(workers)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    """The figures a child printed as its last line."""
    out, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(proc.args[2:4])} failed:\n{out[-3000:]}\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--flows", type=int, default=1, help="comparison pipelines at once, each its own process")
    parser.add_argument("--single", choices=["sqlite", "postgresql"], help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", metavar="API_URL", help=argparse.SUPPRESS)
    parser.add_argument("--directory", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Children print their figures as the last line of stdout.
    if args.pipeline:
        print(json.dumps(run_pipeline(args.pipeline, args.directory, args.episodes, args.workers)))
        return
    if args.single:
        print(json.dumps(run_against(args.single, args.directory, args.episodes, args.workers, args.flows)))
        return

    root = Path(tempfile.mkdtemp(prefix="daf-load-"))
    root.chmod(0o755)  # the PostgreSQL cluster runs as Debian's postgres user
    figures = {}
    try:
        for database in args.databases:
            role = ["--single", database, "--flows", str(args.flows)]
            figures[database] = finish(child(role, root / database, args.episodes, args.workers))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"{args.flows} comparison pipeline(s) at once, each {len(POLICIES)} policies x {len(MISSIONS)} missions x "
        f"{args.episodes} episodes with {args.workers} parallel evaluations, through `prefect server start`"
    )
    names = list(figures)
    print(f"{'':<44}" + "".join(f"{name:>12}" for name in names))
    rows = {
        "pipeline status": [f["status"] for f in figures.values()],
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
        print(f"{label:<44}" + "".join(f"{value!s:>12}" for value in values))
    for name, f in figures.items():
        for line in f["errors"][:5]:
            print(f"  {name} pipeline error: {line[:200]}")
        for line in f["client"][:5]:
            print(f"  {name} client: {line}")
        for line in f["server"][:5]:
            print(f"  {name} server: {line}")


if __name__ == "__main__":
    main()
