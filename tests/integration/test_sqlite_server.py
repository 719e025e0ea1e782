"""The laptop path of deployments/README.md: `prefect server start` on its default SQLite database, `deploy.sh
--local-only`, `prefect deployment run`, and a one-shot worker told where the checkout is by DAF_HOME."""

from __future__ import annotations

import json

import stack
import yaml

PULL = yaml.safe_load((stack.REPO / "deployments" / "prefect.yaml").read_text())["pull"]


def test_comparison_deployment_on_a_sqlite_server_with_daf_home(stack_dir):
    server = stack.start_prefect_server(stack_dir / "sqlite-server")
    try:
        stack.run([str(stack.REPO / "deployments" / "deploy.sh"), "--local-only"], server.env, timeout=240)
        out = stack_dir / "sqlite-out"
        config = {
            "policies": [{"class_path": "baseline"}, {"class_path": "random"}],
            "missions": ["training_facility_1"],
            "episodes_per_mission": 2,
            "device": "cpu",
            "output_dir": str(out),
        }
        runs = stack.Runs(server)
        flow_run_id = runs.create("comparison/comparison-local", {"config": config})
        # The worker runs from elsewhere; DAF_HOME names the checkout the flow run changes into.
        stack.run(
            [str(stack.BIN / "prefect"), "worker", "start", "--pool", "daf-local", "--run-once"],
            server.env | {"DAF_HOME": str(stack.REPO)},
            timeout=180,
            cwd=stack_dir,
        )
        run = runs.wait_final(flow_run_id, timeout=60)
        assert run.state.is_completed(), f"{run.state}\n{runs.logs(flow_run_id)[-5:]}"
        with runs.client() as client:
            assert client.read_deployment_by_name("comparison/comparison-local").pull_steps == PULL
        (result_path,) = out.glob(f"runs/comparison-*-{flow_run_id[:8]}/pipeline_result.json")
        result = json.loads(result_path.read_text())
        assert result["status"] == "success"
        assert result["stages_completed"] == [
            "environment_validation", "policy_comparison", "statistical_testing", "report_generation"
        ]  # fmt: skip
    finally:
        server.stop()
