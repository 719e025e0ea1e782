"""DAF on a Prefect server as users run it: PostgreSQL, `prefect server start` with its services, deploy.sh,
`prefect deployment run`, a process worker started without DAF_HOME, a Dask cluster. Nothing is mocked.

The first test that needs the stack starts it (about 30 s); later tests reuse it.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import stack
import yaml

PREFECT_FILE = stack.REPO / "deployments" / "prefect.yaml"


def comparison_config(out: Path, **overrides) -> dict:
    return {
        "policies": [{"class_path": "baseline"}, {"class_path": "random"}],
        "missions": ["training_facility_1"],
        "episodes_per_mission": 2,
        "device": "cpu",
        "output_dir": str(out),
        **overrides,
    }


def pipeline_result(out: Path, flow_run_id: str) -> dict:
    (path,) = out.glob(f"runs/*-{flow_run_id[:8]}/pipeline_result.json")
    return json.loads(path.read_text())


def deployment_runs(runs, name: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with runs.client() as client:
        deployment = client.read_deployment_by_name(name)
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))


def test_scheduler_creates_the_nightly_benchmark_runs(runs):
    nightly = next(
        d for d in yaml.safe_load(PREFECT_FILE.read_text())["deployments"] if d["name"] == "benchmark-nightly-gpu"
    )
    (schedule,) = nightly["schedules"]
    zone = ZoneInfo(schedule["timezone"])
    hour = int(schedule["cron"].split()[1])

    # The server's scheduler service, not deploy.sh, creates these (Prefect 3.8.8 with SQLAlchemy 2.1 made none).
    scheduled = stack.wait_for(
        lambda: [r for r in deployment_runs(runs, "benchmark/benchmark-nightly-gpu") if r.state.is_scheduled()],
        timeout=90,
        what="the scheduler to create the nightly benchmark's runs",
    )
    assert len(scheduled) >= 3
    starts = sorted(r.expected_start_time for r in scheduled)
    for run in scheduled:
        assert run.auto_scheduled and run.state.name == "Scheduled"
        assert run.work_pool_name == "daf-docker-gpu"  # waiting in its pool until a GPU worker polls it
        assert run.parameters["config"]["device"] == "cuda"
    for start in starts:
        local = start.astimezone(zone)
        assert (local.hour, local.minute) == (hour, 0), local
    assert all(
        b - a == timedelta(days=1) or (b - a).total_seconds() in (23 * 3600, 25 * 3600)  # DST
        for a, b in zip(starts, starts[1:])
    )
    assert "Can't evaluate bulk DML" not in runs.server.service.output(tail=10**7)


def test_interval_schedule_is_picked_up_by_a_worker_and_completes(runs, worker, stack_dir):
    out = stack_dir / "every-10s-out"
    spec = yaml.safe_load(PREFECT_FILE.read_text())
    base = next(d for d in spec["deployments"] if d["name"] == "comparison-local")
    spec["deployments"] = [
        {
            **base,
            "name": "comparison-every-10s",
            "schedules": [{"interval": 10}],
            "parameters": {"config": comparison_config(out)},
        }
    ]
    prefect_file = stack_dir / "every-10s.yaml"
    prefect_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    prefect = str(stack.BIN / "prefect")
    stack.run(
        [prefect, "--no-prompt", "deploy", "--name", "comparison-every-10s", "--prefect-file", str(prefect_file)],
        runs.server.env,
        timeout=120,
    )
    try:

        def completed():
            return [r for r in deployment_runs(runs, "comparison/comparison-every-10s") if r.state.is_completed()]

        first = stack.wait_for(completed, timeout=180, what="a scheduled run to complete on the worker")[0]
        assert first.auto_scheduled  # created by the scheduler, not by this test
        result = pipeline_result(out, str(first.id))
        assert result["status"] == "success", result["errors"]
    finally:
        stack.run([prefect, "deployment", "delete", "comparison/comparison-every-10s"], runs.server.env, timeout=60)


def test_failed_run_on_a_worker_ends_with_the_pipeline_error_and_no_traceback(runs, worker, stack_dir):
    out = stack_dir / "failing-out"
    # A policy the worker cannot load (the server checks missions, not what a class path names).
    policies = [{"class_path": "baseline"}, {"class_path": "nowhere"}]
    flow_run_id = runs.create("comparison/comparison-local", {"config": comparison_config(out, policies=policies)})
    run = runs.wait_final(flow_run_id, timeout=120, worker=worker)

    assert run.state.is_failed(), run.state
    assert run.state.message.startswith("environment_validation: EnvironmentCheckError: policy:nowhere:"), run.state
    logs = runs.settled_logs(flow_run_id)
    assert not [m for m in logs if "Traceback" in m or "unexpected exception" in m], logs
    assert logs[-1].startswith("comparison pipeline failed: environment_validation:"), logs[-3:]
    assert "'nowhere'" in logs[-1]
    # Once, at ERROR: not again from the task run, its final state or the flow run's.
    assert [m for m in logs if "unknown policy 'nowhere'" in m] == [logs[-1]]
    assert runs.logs(flow_run_id, min_level=logging.ERROR) == [logs[-1]]
    # Nothing of Prefect's HTTP client in the worker's output (mettagrid would lower the root logger to INFO).
    assert "HTTP Request" not in worker.output(tail=10**7)
    result = pipeline_result(out, flow_run_id)
    assert result["status"] == "failed" and result["stages_failed"] == ["environment_validation"]


def test_a_deployment_run_cannot_import_by_class_path_or_reach_an_unlisted_dask_scheduler(runs, worker, stack_dir):
    """A deployment parameter is chosen by whoever starts a run; the worker reads a class path as source before it
    imports anything, and trusts only the Dask schedulers its own environment lists (DAF_DASK_ADDRESSES)."""
    out = stack_dir / "hostile-out"
    policies = [{"class_path": "baseline"}, {"class_path": "antigravity.X"}]
    by_class = runs.create("comparison/comparison-local", {"config": comparison_config(out, policies=policies)})
    elsewhere = comparison_config(out, task_runner="dask", dask_address="tcp://10.9.9.9:8786")
    by_dask = runs.create("comparison/comparison-local", {"config": elsewhere})

    run = runs.wait_final(by_class, timeout=120, worker=worker)
    assert run.state.is_failed(), run.state
    assert "has no class, assignment or import named 'X' at its top level" in run.state.message, run.state.message
    run = runs.wait_final(by_dask, timeout=120, worker=worker)
    assert run.state.is_failed(), run.state
    logs = "\n".join(runs.settled_logs(by_dask))
    assert "'tcp://10.9.9.9:8786' is not a Dask scheduler this machine allows" in run.state.message + logs, logs
    assert "it lists tcp://127.0.0.1:*" in run.state.message + logs, logs


def test_deploy_script_prints_no_http_client_lines(runs):
    out = stack.run([str(stack.REPO / "deployments" / "deploy.sh"), "--local-only"], runs.server.env, timeout=240)
    assert "HTTP Request" not in out and "httpx" not in out, out[-3000:]
    assert "deployments now refuse unknown parameters and missions" in out


def test_unknown_parameter_is_refused_when_the_run_is_created(runs):
    from prefect.exceptions import PrefectHTTPStatusError

    with runs.client() as client:
        deployment = client.read_deployment_by_name("comparison/comparison-local")
        with pytest.raises(PrefectHTTPStatusError, match=r"'confg' was unexpected"):
            client.create_flow_run_from_deployment(
                deployment.id, parameters={"config": deployment.parameters["config"], "confg": {}}
            )
        with pytest.raises(PrefectHTTPStatusError, match=r"episodes_per_misson"):  # inside config: pydantic's schema
            client.create_flow_run_from_deployment(
                deployment.id, parameters={"config": {**deployment.parameters["config"], "episodes_per_misson": 3}}
            )


def test_unknown_mission_is_refused_when_the_run_is_created_with_the_known_names(runs):
    from prefect.exceptions import PrefectHTTPStatusError

    from daf.missions import list_missions

    known = re.escape(str(list_missions()))
    with runs.client() as client:
        deployment = client.read_deployment_by_name("training/training-local")
        config = deployment.parameters["config"]
        for field in ("missions", "eval_missions"):
            with pytest.raises(PrefectHTTPStatusError, match=rf"'nowhere' is not one of {known}") as refused:
                client.create_flow_run_from_deployment(
                    deployment.id, parameters={"config": {**config, field: ["training_facility_1", "nowhere"]}}
                )
            assert refused.value.response.status_code == 409
    # From the CLI, as the README's commands run it: the same answer, and no run is created.
    before = len(deployment_runs(runs, "benchmark/benchmark-local"))
    out = stack.run(
        [str(stack.BIN / "prefect"), "deployment", "run", "benchmark/benchmark-local", "--params",
         json.dumps({"config": {"policies": [{"class_path": "baseline"}], "missions": ["nowhere"]}})],
        runs.server.env, check=False,
    )  # fmt: skip
    assert re.search(rf"'nowhere' is not one of {known}", " ".join(out.split())), out
    assert len(deployment_runs(runs, "benchmark/benchmark-local")) == before


def test_deployment_run_evaluates_on_the_configured_dask_cluster(runs, worker, stack_dir):
    from distributed import Client

    address, dask_services = stack.start_dask(stack_dir / "dask", runs.server.env, workers=1)
    try:
        out = stack_dir / "dask-out"
        config = comparison_config(
            out,
            task_runner="dask",
            dask_address=address,
            parallel_evaluation=True,
            max_parallel_jobs=2,
            use_cache=False,
        )
        flow_run_id = runs.create("comparison/comparison-local", {"config": config})
        run = runs.wait_final(flow_run_id, timeout=180, worker=worker)
        assert run.state.is_completed(), f"{run.state}\n{runs.logs(flow_run_id)[-5:]}"
        assert pipeline_result(out, flow_run_id)["status"] == "success"
        with Client(address, timeout=10) as client:
            executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
            prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
        # Both evaluations (2 policies x 1 mission) ran as tasks on the Dask worker, not in the flow process.
        assert sum(executed.values()) == 2, executed
        assert prefixes == ["evaluate_task"]
    finally:
        for service in dask_services:
            service.stop()


def test_ui_calls_the_api_of_the_port_it_is_served_on(runs):
    ui = runs.server.api_url.removesuffix("/api")
    with urllib.request.urlopen(f"{ui}/ui-settings", timeout=10) as response:
        settings = json.load(response)
    assert settings["api_url"] == runs.server.api_url


def test_sweep_deployment_runs_its_trials_as_task_runs_on_a_worker(runs, worker, stack_dir):
    # The sweep flow drives its study from the worker's flow-run process: each trial a task run of its own.
    out = stack_dir / "sweep-out"
    config = {
        "name": "worker-sweep",
        "policy_class_path": "mlp",
        "missions": ["training_facility_1"],
        "search_space": {"learning_rate": [0.0003, 0.001]},
        "strategy": "grid",
        "training_steps_per_trial": 2048,
        "episodes_per_trial": 2,
        "pruner": "none",
        "training": {"num_envs": 4},
        "device": "cpu",
        "output_dir": str(out),
    }
    flow_run_id = runs.create("sweep/sweep-local", {"config": config})
    run = runs.wait_final(flow_run_id, timeout=240, worker=worker)
    assert run.state.is_completed(), f"{run.state}\n{runs.logs(flow_run_id)[-5:]}"
    result = pipeline_result(out, flow_run_id)
    assert result["status"] == "success", result["errors"]
    assert sorted(t["params"]["learning_rate"] for t in result["outputs"]["trials"]) == [0.0003, 0.001]
    assert all(t["state"] == "COMPLETE" for t in result["outputs"]["trials"])
    with runs.client() as client:
        task_runs = client.read_task_runs()
    names = {t.name for t in task_runs if t.flow_run_id is not None and str(t.flow_run_id) == flow_run_id}
    assert {"sweep worker-sweep trial 0", "sweep worker-sweep trial 1"} <= names, names
