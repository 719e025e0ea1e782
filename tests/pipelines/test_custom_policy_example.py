"""examples/gridnet, recurrent policies outside DAF, through the four orchestrators by their class paths: a DAF
`NeuralPolicy` subclass, and the specification's shape (a plain mettagrid `MultiAgentPolicy` setting `self.network`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daf.config import DAFSweepConfig
from daf.orchestrators import (
    daf_run_benchmark_pipeline,
    daf_run_comparison_pipeline,
    daf_run_sweep_pipeline,
    daf_run_training_pipeline,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MISSION = "training_facility_1"
SMALL = dict(num_envs=4, num_steps=32, bptt_horizon=8)


@pytest.fixture(params=["gridnet.GRUPolicy", "gridnet.PlainGRUPolicy"])
def gridnet(monkeypatch, request):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield request.param


def test_the_example_policy_trains_compares_sweeps_and_ships(gridnet, tmp_path):
    out = str(tmp_path / "out")
    trained = daf_run_training_pipeline(
        policy_class_path=gridnet,
        missions=[MISSION],
        num_training_steps=2048,
        eval_missions=[MISSION],
        eval_episodes=2,
        output_dir=out,
        **SMALL,
    )
    assert trained.status == "success", trained.errors
    checkpoint = trained.outputs["final_checkpoint"]
    assert Path(checkpoint).is_file() and trained.outputs["training"]["class_path"] == gridnet
    (evaluation,) = trained.outputs["evaluation_results"]
    assert evaluation["episodes"] == 2

    entry = {"class_path": gridnet, "data_path": checkpoint, "name": "gridnet"}
    compared = daf_run_comparison_pipeline(
        policies=[entry, "baseline"], missions=[MISSION], episodes_per_mission=4, output_dir=out
    )
    assert compared.status == "success", compared.errors
    assert {row["policy"] for row in compared.outputs["statistics"]["leaderboard"]} == {"gridnet", "baseline"}

    sweep = DAFSweepConfig(
        name="gridnet",
        output_dir=out,
        policy_class_path=gridnet,
        missions=[MISSION],
        strategy="grid",
        search_space={"learning_rate": [0.001, 0.0003]},
        training_steps_per_trial=1024,
        episodes_per_trial=2,
        pruner="none",
        training=SMALL,
    )
    swept = daf_run_sweep_pipeline(config=sweep)
    assert swept.status == "success", swept.errors
    assert [t["state"] for t in swept.outputs["trials"]] == ["COMPLETE", "COMPLETE"]

    shipped = daf_run_benchmark_pipeline(
        policies=[entry], missions=[MISSION], episodes_per_mission=2, create_deployment_package=True, output_dir=out
    )
    assert shipped.status == "success", shipped.errors
    assert Path(shipped.outputs["deployment_package"]).is_file()
    assert shipped.outputs["package_validation"]["ok"], shipped.outputs["package_validation"]
