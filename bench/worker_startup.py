"""Where a process-worker run's time goes before its first stage, for DAF's comparison deployment and, side by side,
for a reference flow that imports nothing but Prefect, on the same server, pool and worker.

Each run's phases are read from its own log records (timestamps written by the flow-run process and the worker):

  submit -> process up    the worker's "submitting" line to the flow-run process's first line (process start,
                          `import prefect`, reading the deployment)
  pull steps              the deployment's pull steps (DAF: enter_checkout; reference: set_working_directory)
  import + engine         the flow's module imported (DAF: torch, mettagrid, scipy, matplotlib, ...) and the engine
                          started, to "Beginning flow run"
  to first line           the engine to the flow's own first line (DAF: "Prefect flow run ... started")

then, for DAF's flow module, the heaviest imports (`python -X importtime`, cumulative seconds).

    python bench/worker_startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import stack  # noqa: E402  (the services the integration tests use)

PHASES = ("submit -> process up", "pull steps", "import + engine", "to first line", "total")
REFERENCE_FLOW = """
from prefect import flow, get_run_logger


@flow
def reference(config: dict) -> None:
    get_run_logger().info("reference flow started")
"""


def phases(logs: list[tuple[datetime, str]], first_line: str) -> dict[str, float]:
    def at(prefix: str) -> datetime:
        return next(t for t, message in logs if message.startswith(prefix))

    submitted = at("Worker ")
    up = at("Running ")
    pulled = at("All deployment steps completed")
    began = at("Beginning flow run")
    first = at(first_line)
    spans = [up - submitted, pulled - up, began - pulled, first - began, first - submitted]
    return {name: span.total_seconds() for name, span in zip(PHASES, spans)}


def run_logs(runs: stack.Runs, flow_run_id: str) -> list[tuple[datetime, str]]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    runs.settled_logs(flow_run_id, quiet_seconds=2.0)
    with runs.client() as client:
        records = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), sort=LogSort.TIMESTAMP_ASC
        )
    return [(r.timestamp, r.message) for r in records]


def heaviest_imports(module: str, top: int = 8) -> list[tuple[str, float]]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True, check=True
    ).stderr
    rows = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].strip()
            if "." not in name or name.startswith("daf"):  # top-level packages and DAF's own modules
                rows.append((name, int(parts[1]) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each flow (alternating)")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="daf-startup-"))
    server = stack.start_prefect_server(directory / "server")
    worker = None
    try:
        stack.run([str(stack.REPO / "deployments" / "deploy.sh"), "--local-only"], server.env, timeout=240)
        reference_dir = directory / "reference"
        reference_dir.mkdir()
        (reference_dir / "reference.py").write_text(textwrap.dedent(REFERENCE_FLOW))
        deploy_reference = (
            "from prefect import flow\n"
            f"flow.from_source(source={str(reference_dir)!r}, entrypoint='reference.py:reference')"
            ".deploy(name='reference', work_pool_name='daf-local', parameters={'config': {}})\n"
        )
        stack.run([sys.executable, "-c", deploy_reference], server.env, timeout=120)
        worker = stack.start_worker("worker", "daf-local", server.env, directory)
        runs = stack.Runs(server)
        daf_config = {
            "policies": [{"class_path": "baseline"}],
            "missions": ["training_facility_1"],
            "episodes_per_mission": 1,
            "device": "cpu",
            "output_dir": str(directory / "out"),
        }
        measured: dict[str, list[dict[str, float]]] = {"DAF comparison": [], "reference flow": []}
        for _ in range(args.runs):
            for name, deployment, first_line in (
                ("DAF comparison", "comparison/comparison-local", "Prefect flow run"),
                ("reference flow", "reference/reference", "reference flow started"),
            ):
                flow_run_id = runs.create(deployment, {"config": daf_config if name.startswith("DAF") else {}})
                run = runs.wait_final(flow_run_id, timeout=300, worker=worker)
                assert run.state.is_completed(), f"{name}: {run.state}"
                measured[name].append(phases(run_logs(runs, flow_run_id), first_line))

        print(f"\nBefore the first line of the flow, median of {args.runs} runs (seconds), 2 processes per run:")
        print(f"{'phase':<24}{'DAF comparison':>16}{'reference flow':>16}{'DAF - reference':>17}")
        for phase in PHASES:
            daf = statistics.median(m[phase] for m in measured["DAF comparison"])
            ref = statistics.median(m[phase] for m in measured["reference flow"])
            print(f"{phase:<24}{daf:>16.2f}{ref:>16.2f}{daf - ref:>17.2f}")
        print("\nHeaviest imports of daf.flows.comparison (cumulative seconds, one cold process):")
        for module, seconds in heaviest_imports("daf.flows.comparison"):
            print(f"  {module:<40}{seconds:>8.2f}")
        print(json.dumps(measured))
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


if __name__ == "__main__":
    main()
