"""Load: a comparison of 8 policies x 4 missions with parallel evaluation through a real Prefect API server.

Counts task runs, their final states, and every WARNING/ERROR log record from Prefect's client and server
(database locks, HTTP 5xx, retries of API calls). Passes when the pipeline succeeds with no such records.

    python bench/load_comparison.py [--episodes 5] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from collections import Counter

POLICIES = [
    {"class_path": "baseline", "name": f"baseline-s{s}", "init_kwargs": {"seed": s}} for s in range(3)
] + [{"class_path": "random", "name": f"random-s{s}", "init_kwargs": {"seed": s}} for s in range(3)] + [
    {"class_path": "noop"},
    {"class_path": "mlp", "name": "mlp-untrained"},
]
MISSIONS = ["training_facility_1", "training_facility_2", "assembler_1", "assembler_2"]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Task failures are the pipeline's own business (reported in its result); count the infrastructure.
        if record.name.startswith(("prefect.server", "prefect.client", "prefect._internal", "httpx", "uvicorn")):
            self.records.append(record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="daf-load-")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(home, "storage")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.testing.utilities import prefect_test_harness

    from daf.orchestrators import daf_run_comparison_pipeline

    collector = _Collect()
    logging.getLogger().addHandler(collector)
    with prefect_test_harness(server_startup_timeout=60):
        started = time.perf_counter()
        result = daf_run_comparison_pipeline(
            policies=POLICIES, missions=MISSIONS, episodes_per_mission=args.episodes, parallel_evaluation=True,
            max_parallel_jobs=args.workers, output_dir=os.path.join(home, "out"), use_cache=False,
        )
        wall = time.perf_counter() - started

        async def task_states() -> Counter:
            async with get_client() as client:
                flt = FlowRunFilter(id=FlowRunFilterId(any_=[result.outputs["flow_run_id"]]))
                runs = await client.read_task_runs(flow_run_filter=flt)
            return Counter(f"{r.name.split('-')[0]}:{r.state.name}" for r in runs)

        states = asyncio.run(task_states())

    print(f"{len(POLICIES)} policies x {len(MISSIONS)} missions x {args.episodes} episodes, "
          f"{args.workers} parallel workers, through a Prefect API server")
    print(f"pipeline status: {result.status} in {wall:.1f}s; stages: {', '.join(result.stages_completed)}")
    for key, count in sorted(states.items()):
        print(f"  task runs {key:<32}{count:>4}")
    print(f"server/client warnings and errors: {len(collector.records)}")
    for record in collector.records[:10]:
        print(f"  {record.levelname} {record.name}: {record.getMessage()[:160]}")
    ok = result.is_success() and not collector.records and states.get("evaluation:Completed") == 32
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
