"""Every snippet of the seed specification, as written, with small step counts and mission names that exist."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mettagrid.policy.policy import PolicySpec

from daf import environment_checks
from daf.config import DAFConfig, DAFSweepConfig
from daf.orchestrators import (
    daf_run_benchmark_pipeline,
    daf_run_comparison_pipeline,
    daf_run_sweep_pipeline,
    daf_run_training_pipeline,
)

SMALL = {"num_envs": 4, "num_steps": 32, "bptt_horizon": 8}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a temporary directory: the snippets use relative paths (sweep.yaml, ckpt/, daf_output/)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_best_practice_environment_checks():
    result = environment_checks.daf_check_environment()
    assert result.is_healthy(), result.summary()
    result = environment_checks.daf_check_dependencies()
    assert result.is_healthy(), result.summary()


def test_training_then_comparison_snippets(in_tmp):
    result = daf_run_training_pipeline(
        policy_class_path="lstm",
        missions=["training_facility_1"],
        num_training_steps=4_000,
        eval_missions=["assembler_2"],
        eval_episodes=2,
        **SMALL,
    )
    assert result.is_success(), result.errors
    print(f"Training checkpoint: {result.outputs['final_checkpoint']}")

    Path("ckpt").mkdir()
    shutil.copy(result.outputs["final_checkpoint"], "ckpt/v1.pt")
    shutil.copy(result.outputs["final_checkpoint"], "ckpt/v2.pt")
    policies = [
        PolicySpec(class_path="lstm", data_path="ckpt/v1.pt"),
        PolicySpec(class_path="lstm", data_path="ckpt/v2.pt"),
        PolicySpec(class_path="baseline"),
    ]
    result = daf_run_comparison_pipeline(
        policies=policies,
        missions=["training_facility_1", "assembler_2"],
        episodes_per_mission=3,
        parallel_evaluation=True,
    )
    assert result.is_success(), result.errors
    stats = result.outputs["summary_statistics"]
    assert {row["policy"] for row in stats["leaderboard"]} == {"lstm-v1.pt", "lstm-v2.pt", "baseline"}
    # v1 and v2 are the same weights: they must not be called different.
    v1 = next(r for r in stats["leaderboard"] if r["policy"] == "lstm-v1.pt")
    v2 = next(r for r in stats["leaderboard"] if r["policy"] == "lstm-v2.pt")
    assert v1["rank_group"] == v2["rank_group"] and v1["mean"] == v2["mean"]


def test_sweep_snippet_from_yaml(in_tmp):
    Path("sweep.yaml").write_text(
        "name: seed-sweep\n"
        "policy_class_path: mlp\n"
        "missions: [training_facility_1]\n"
        "search_space:\n"
        "  learning_rate: [0.0, 0.001]\n"
        "training_steps_per_trial: 4000\n"
        "pruner: none\n"
        "episodes_per_trial: 2\n"
        "training: {num_envs: 4, num_steps: 32, bptt_horizon: 8}\n"
    )
    cfg = DAFSweepConfig.from_yaml("sweep.yaml")
    cfg.episodes_per_trial = 1
    result = daf_run_sweep_pipeline(config=cfg, compare_best=True, comparison_episodes=2)
    assert result.is_success(), result.errors
    best = result.outputs["best_config"]
    print(f"Optimal learning rate: {best.hyperparameters['learning_rate']}")
    assert best.hyperparameters["learning_rate"] in (0.0, 0.001)
    assert Path(result.outputs["best_checkpoint"]).is_file()
    assert len(result.outputs["trials"]) == 2
    assert "comparison" in result.stages_completed


def test_multi_stage_workflow_snippet(in_tmp):
    train_result = daf_run_training_pipeline(
        policy_class_path="lstm", missions=["training_facility_1"], num_training_steps=3_000, **SMALL
    )
    assert train_result.is_success(), train_result.errors
    sweep_cfg = DAFSweepConfig(
        policy_class_path="lstm",
        policy_data_path=train_result.outputs["final_checkpoint"],
        missions=["training_facility_2"],
        search_space={"learning_rate": [0.0001, 0.001, 0.01]},
        training_steps_per_trial=2_000,
        episodes_per_trial=1,
        pruner="none",
        training=SMALL,
    )
    sweep_result = daf_run_sweep_pipeline(config=sweep_cfg, parallel_stages=False)
    assert sweep_result.is_success(), sweep_result.errors
    comparison_result = daf_run_comparison_pipeline(
        policies=[
            PolicySpec(class_path="lstm", data_path=sweep_result.outputs["best_checkpoint"]),
            PolicySpec(class_path="baseline"),
        ],
        missions=["training_facility_1", "assembler_2"],
        episodes_per_mission=2,
    )
    assert comparison_result.is_success(), comparison_result.errors


def test_benchmark_snippet_with_resource_config(in_tmp):
    cfg = DAFConfig(max_parallel_jobs=4, gpu_memory_fraction=0.8)
    result = daf_run_benchmark_pipeline(
        config=cfg,
        policies=["lstm"],
        missions=["training_facility_1", "assembler_2"],
        episodes_per_mission=2,
        create_deployment_package=True,
        training_steps=3_000,
        training=SMALL,
    )
    if result.is_success():
        print(f"Deployment package: {result.outputs['deployment_package']}")
    assert result.is_success(), result.errors
    assert result.stages_completed == [
        "environment_validation",
        "training",
        "evaluation",
        "comparison",
        "report_generation",
        "deployment_package",
    ]
    assert Path(result.outputs["deployment_package"]).is_file()
    assert result.outputs["package_validation"]["ok"] is True
    checkpoint = result.outputs["final_checkpoint"]
    assert Path(checkpoint).is_file()


def test_troubleshooting_sweep_with_plain_config_fails_clearly():
    cfg = DAFConfig(max_parallel_jobs=1)
    result = daf_run_sweep_pipeline(config=cfg)
    assert result.status == "failed"
    assert "DAFSweepConfig" in result.errors[0] and "search_space" in result.errors[0]
