"""The four pipelines end to end through real Prefect flows: stage mapping, caching, retries, parallelism."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path

import pytest
from mettagrid.policy.policy import PolicySpec
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from daf.config import DAFComparisonConfig, DAFConfig, DAFTrainingConfig
from daf.orchestrators import (
    daf_run_benchmark_pipeline,
    daf_run_comparison_pipeline,
    daf_run_training_pipeline,
)
from daf.results import INVALID_INPUT, STAGE_FAILED, STOPPED, PipelineResult


def task_runs(result: PipelineResult) -> list:
    async def read():
        async with get_client() as client:
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[result.outputs["flow_run_id"]]))
            return await client.read_task_runs(flow_run_filter=flt)

    return asyncio.run(read())


def artifacts(result: PipelineResult) -> dict[str, object]:
    """The flow run's UI artifacts by type: table rows, link data, markdown texts."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[result.outputs["flow_run_id"]]))
            return await client.read_artifacts(artifact_filter=flt)

    out: dict[str, list] = {}
    for artifact in asyncio.run(read()):
        data = json.loads(artifact.data) if artifact.type == "table" else artifact.data
        out.setdefault(artifact.type, []).append(data)
    return out


def small_training(tmp_path: Path, **kw) -> dict:
    return dict(
        output_dir=str(tmp_path / "out"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        num_envs=4,
        num_steps=32,
        bptt_horizon=8,
        **kw,
    )


def test_training_pipeline_success_and_saved_result(tmp_path):
    result = daf_run_training_pipeline(
        policy_class_path="mlp",
        missions=["training_facility_1"],
        num_training_steps=3000,
        eval_missions=["training_facility_1"],
        eval_episodes=2,
        **small_training(tmp_path),
    )
    assert result.status == "success", result.errors
    assert result.error_kind is None
    assert result.stages_completed == [
        "environment_validation", "training", "checkpoint_saving", "evaluation", "report_generation"
    ]  # fmt: skip
    assert Path(result.outputs["final_checkpoint"]).is_file()
    assert result.outputs["training"]["global_step"] >= 3000
    assert len(result.outputs["evaluation_results"]) == 1
    saved = PipelineResult.from_json(Path(result.outputs["result_path"]).read_text())
    assert saved.status == "success" and saved.outputs["final_checkpoint"] == result.outputs["final_checkpoint"]
    # The UI's result artifact shows what the evaluation scored, and a link artifact opens the training report.
    link, markdown = sorted(artifacts(result)["markdown"], key=lambda text: not text.startswith("[HTML report"))
    uri = Path(result.outputs["report_html"]).as_uri()
    assert link == f"[HTML report ({uri})]({uri})"
    (evaluation,) = result.outputs["evaluation_results"]
    row = f"| {evaluation['policy']} | training\\_facility\\_1 | 2 | {evaluation['mean_reward']:.3f} |"
    assert row in markdown, markdown
    (training,) = [t for t in task_runs(result) if t.name.startswith("training")]
    assert training.name == "training mlp on training_facility_1"
    # The training report: the run, its learning curve and the evaluation with its CI.
    report = Path(result.outputs["report_html"]).read_text()
    assert f'alt="learning curve of {result.outputs["training"]["run_id"]}"' in report
    # It names the flow run it came from and the DAF source that ran.
    assert "<th>Prefect flow run</th>" in report and f"<code>{result.outputs['flow_run_id']}</code>" in report
    assert "<th>DAF source</th>" in report and "source sha256 <code>" in report
    mean = f"{evaluation['mean_reward']:.3f}"
    assert f'<td>training_facility_1</td><td class="num">2</td><td class="num">{mean}</td>' in report
    assert f"tensorboard --logdir {result.outputs['training']['tensorboard_dir']}" in report


def test_optional_stage_failure_is_partial_and_keeps_outputs(tmp_path, faults):
    faults("evaluation:permanent")
    result = daf_run_training_pipeline(
        policy_class_path="mlp",
        missions=["training_facility_1"],
        num_training_steps=2000,
        eval_missions=["training_facility_1"],
        eval_episodes=2,
        **small_training(tmp_path),
    )
    assert result.status == "partial" and result.error_kind == STAGE_FAILED
    assert result.stages_failed == ["evaluation"]
    assert "PermanentFault" in result.errors[0] and result.errors[0].startswith("evaluation:")
    assert Path(result.outputs["final_checkpoint"]).is_file()


def test_required_stage_failure_is_failed_and_not_retried(tmp_path, faults):
    faults("training:permanent")
    result = daf_run_training_pipeline(
        policy_class_path="mlp", missions=["training_facility_1"], num_training_steps=2000, **small_training(tmp_path)
    )
    assert result.status == "failed" and result.error_kind == STAGE_FAILED
    assert result.stages_completed == ["environment_validation"]
    assert result.stages_failed == ["training"]
    training = [t for t in task_runs(result) if t.name.startswith("training")]
    assert [t.run_count for t in training] == [1]  # a permanent error is not retried


def test_invalid_arguments_give_failed_result_naming_the_argument(tmp_path):
    result = daf_run_training_pipeline(policy_class_path="mlp", num_training_steps=-5)
    assert result.status == "failed" and result.error_kind == INVALID_INPUT
    assert "num_training_steps" in result.errors[0]
    result = daf_run_comparison_pipeline(policies=["baseline"], missions=[], episodes_per_mission=2)
    assert result.status == "failed" and "missions" in result.errors[0] and result.error_kind == INVALID_INPUT
    result = daf_run_comparison_pipeline(
        policies=["baseline"], missions=["nowhere"], episodes_per_mission=2, output_dir=str(tmp_path)
    )
    assert result.status == "failed" and result.stages_failed == ["environment_validation"]
    assert "unknown mission 'nowhere'" in result.errors[0] and result.error_kind == STAGE_FAILED


def test_transient_evaluation_fault_is_retried_and_pipeline_succeeds(tmp_path, faults):
    faults("evaluation:transient:1")
    result = daf_run_comparison_pipeline(
        policies=[PolicySpec(class_path="baseline"), PolicySpec(class_path="random")],
        missions=["training_facility_1"],
        episodes_per_mission=3,
        output_dir=str(tmp_path),
        use_cache=False,
    )
    assert result.status == "success", result.errors
    counts = sorted(t.run_count for t in task_runs(result) if t.name.startswith("evaluation"))
    assert counts == [1, 2]  # exactly one evaluation failed once and succeeded on its retry


def test_comparison_outputs_report_and_distinct_names(tmp_path):
    result = daf_run_comparison_pipeline(
        policies=[PolicySpec(class_path="baseline"), PolicySpec(class_path="random"), PolicySpec(class_path="random")],
        missions=["training_facility_1", "assembler_1"],
        episodes_per_mission=4,
        output_dir=str(tmp_path),
    )
    assert result.is_success(), result.errors
    assert result.stages_completed == [
        "environment_validation",
        "policy_comparison",
        "statistical_testing",
        "report_generation",
    ]
    board = result.outputs["summary_statistics"]["leaderboard"]
    assert [row["policy"] for row in board][0] == "baseline"
    assert {row["policy"] for row in board} == {"baseline", "random", "random#2"}
    html = Path(result.outputs["report_html"]).read_text()
    assert "random#2" in html and "assembler_1" in html
    shown = artifacts(result)
    (table,) = shown["table"]
    for row in table:  # rounded as in the report, not float noise such as 18.390000000000015
        assert re.fullmatch(r"-?\d+\.\d{3}", row["mean"]), row
        assert re.fullmatch(r"\[-?\d+\.\d{3}, -?\d+\.\d{3}\]", row["95% CI"]), row
    uri = Path(result.outputs["report_html"]).resolve().as_uri()
    assert [text for text in shown["markdown"] if f"]({uri})" in text], shown["markdown"]  # a link artifact


def test_repeated_comparison_reuses_evaluations_and_statistics_but_writes_its_own_report(tmp_path):
    kwargs = dict(
        policies=["baseline", "noop"],
        missions=["assembler_1"],
        episodes_per_mission=3,
        seed=11,
        output_dir=str(tmp_path),
    )
    first = daf_run_comparison_pipeline(**kwargs)
    again = daf_run_comparison_pipeline(**kwargs)
    fresh = daf_run_comparison_pipeline(**kwargs, use_cache=False)
    for result in (first, again, fresh):
        assert result.is_success(), result.errors

    def states(result: PipelineResult) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for run in task_runs(result):
            # Prefect names runs "<task>-<n>" unless the task names them: "evaluation <policy> on <mission>".
            out.setdefault(run.name.split(" ")[0].rsplit("-", 1)[0], set()).add(run.state.name)
        return out

    evaluations = {run.name for run in task_runs(first) if run.name.startswith("evaluation")}
    assert evaluations == {"evaluation baseline on assembler_1", "evaluation noop on assembler_1"}

    assert states(first) == {
        "environment_validation": {"Completed"},
        "evaluation": {"Completed"},
        "comparison": {"Completed"},
        "report": {"Completed"},
    }
    assert states(again)["evaluation"] == {"Cached"} and states(again)["comparison"] == {"Cached"}
    assert states(again)["report"] == {"Completed"}
    assert states(fresh)["evaluation"] == {"Completed"} and states(fresh)["comparison"] == {"Completed"}
    assert again.outputs["statistics"] == first.outputs["statistics"] == fresh.outputs["statistics"]
    assert again.outputs["report_html"] != first.outputs["report_html"]  # each run has its own report
    assert Path(again.outputs["report_html"]).is_file() and Path(first.outputs["report_html"]).is_file()


def _comparison_stats(tmp_path: Path, **kw) -> dict:
    config = DAFComparisonConfig(
        policies=[{"class_path": "baseline"}, {"class_path": "random"}, {"class_path": "noop"}],
        missions=["training_facility_1", "assembler_1"],
        episodes_per_mission=3,
        output_dir=str(tmp_path),
        use_cache=False,
        **kw,
    )
    result = daf_run_comparison_pipeline(config=config)
    assert result.is_success(), result.errors
    return result.outputs["statistics"]


def test_parallel_threads_and_dask_match_sequential(tmp_path):
    sequential = _comparison_stats(tmp_path / "seq")
    threads = _comparison_stats(tmp_path / "threads", parallel_evaluation=True, max_parallel_jobs=2)
    dask = _comparison_stats(tmp_path / "dask", parallel_evaluation=True, max_parallel_jobs=2, task_runner="dask")
    assert threads == sequential
    assert dask == sequential


def test_benchmark_resume_after_failed_comparison_uses_cached_training(tmp_path, faults):
    kwargs = dict(
        policies=["mlp"],
        missions=["training_facility_1"],
        episodes_per_mission=3,
        create_deployment_package=True,
        training_steps=32_768,
        output_dir=str(tmp_path / "out"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        training={"num_envs": 8, "update_epochs": 2},
    )
    faults("comparison:permanent")
    first = daf_run_benchmark_pipeline(**kwargs)
    assert first.status == "partial", first.errors
    assert "comparison" in first.stages_failed
    assert Path(first.outputs["final_checkpoint"]).is_file()
    assert Path(first.outputs["deployment_package"]).is_file()  # stages after the failed optional one still ran
    trained = {p: p.stat().st_mtime_ns for p in (tmp_path / "ckpt").rglob("*")}

    faults("")
    second = daf_run_benchmark_pipeline(**kwargs)
    assert second.is_success(), second.errors
    assert second.outputs["final_checkpoint"] == first.outputs["final_checkpoint"]
    training = [t for t in task_runs(second) if t.name.startswith("training")]
    assert [t.state.name for t in training] == ["Cached"]
    # Nothing trained again: not one file of the first run's checkpoints rewritten, none added.
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ckpt").rglob("*")} == trained
    board = [row["policy"] for row in second.outputs["summary_statistics"]["leaderboard"]]
    assert set(board) == {"mlp", "baseline", "random"}
    # The report shows the trained policy's learning curve (training was reused from the cache: its metrics too).
    html = Path(second.outputs["report_html"]).read_text()
    assert html.count('<figure class="learning-curve">') == 1 and 'alt="learning curve of mlp"' in html


def test_two_pipelines_at_once_share_output_dir_without_overwriting(tmp_path):
    results: list[PipelineResult] = []

    def run(seed: int) -> None:
        results.append(
            daf_run_comparison_pipeline(
                policies=["baseline", "random"],
                missions=["training_facility_1"],
                episodes_per_mission=2,
                output_dir=str(tmp_path),
                seed=seed,
                use_cache=False,
            )
        )

    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.is_success() for r in results), [r.errors for r in results]
    dirs = {r.outputs["run_dir"] for r in results}
    assert len(dirs) == 2
    seeds = {json.loads(Path(r.outputs["report_json"]).read_text())["metadata"]["seed"] for r in results}
    assert seeds == {1, 2}


def test_training_config_object_snippet(tmp_path):
    # The seed's "custom policy" snippet shape: a DAFTrainingConfig passed as config=.
    cfg = DAFTrainingConfig(
        policy_class_path="mlp", missions=["training_facility_1"], num_training_steps=2000, **small_training(tmp_path)
    )
    result = daf_run_training_pipeline(config=cfg)
    assert result.is_success(), result.errors
    assert result.outputs["session"]["config"]["policy_class_path"] == "mlp"


@pytest.mark.parametrize("bad", [{"gpu_memory_fraction": 0.0}, {"max_parallel_jobs": 0}])
def test_resource_config_rejected(bad, tmp_path):
    result = daf_run_comparison_pipeline(
        policies=["baseline"], missions=["training_facility_1"], episodes_per_mission=1, output_dir=str(tmp_path), **bad
    )
    assert result.status == "failed" and next(iter(bad)) in result.errors[0]


def test_only_gpu_tasks_carry_a_tag():
    # Every tagged task run costs a tag-concurrency request to the server (503-prone on SQLite): CPU tasks have
    # none; GPU tasks carry "gpu", the tag the deployments' concurrency limit applies to.
    from daf.tasks.common import configured
    from daf.tasks.evaluation import evaluate_task
    from daf.tasks.training import train_task

    for task_ in (evaluate_task, train_task):
        assert configured(task_, DAFConfig()).tags == set()
        assert configured(task_, DAFConfig(), gpu=True).tags == {"gpu"}
    # Sweep trials alike: a server-wide "gpu" limit spreads GPU trials over the GPUs.
    from daf.tasks.sweeps import TaskRunnerStarter

    assert TaskRunnerStarter(None, DAFConfig(), "sqlite://", gpu=False).task.tags == set()
    assert TaskRunnerStarter(None, DAFConfig(), "sqlite://", gpu=True).task.tags == {"gpu"}


def test_in_process_runs_skip_heartbeats_unless_configured(monkeypatch):
    # A run in the caller's process waits up to 1 s at its end for Prefect's heartbeat thread; without a
    # user's own heartbeat setting, the orchestrators run without one.
    from prefect.settings import get_current_settings

    from daf.orchestrators import _in_process_settings

    default = get_current_settings().flows.heartbeat_frequency
    with _in_process_settings():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == default
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    with _in_process_settings():
        assert get_current_settings().flows.heartbeat_frequency == 60  # the user's choice is not overridden


def test_a_deliberate_error_is_one_error_line_and_other_errors_keep_their_traceback(tmp_path):
    import logging
    import sys

    import prefect.main  # noqa: F401  (configures Prefect's logging, which would replace a handler added before)

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    loggers = [logging.getLogger(name) for name in ("prefect.task_runs", "prefect.flow_runs")]
    handler = Keep()
    for logger in loggers:
        logger.addHandler(handler)
    try:
        result = daf_run_comparison_pipeline(
            policies=["baseline"], missions=["nowhere"], episodes_per_mission=2, output_dir=str(tmp_path)
        )
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    try:
        raise KeyError("a bug")
    except KeyError:
        bug = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "Task run failed", (), sys.exc_info())
    assert loggers[0].filter(bug)
    assert result.status == "failed" and result.stages_failed == ["environment_validation"]
    # The error once, at ERROR, from the flow run, with no traceback; none of Prefect's copies of it.
    mentions = [r for r in records if "unknown mission 'nowhere'" in r.getMessage()]
    assert [(r.name, r.levelno, r.exc_info) for r in mentions] == [("prefect.flow_runs", logging.ERROR, None)]
    assert mentions[0].getMessage().startswith("comparison pipeline failed: environment_validation:")
    assert not [r for r in records if r.getMessage().startswith("Finished in state Failed")]
    assert bug.exc_info is not None and bug.getMessage() == "Task run failed"  # not DAF's: the traceback stays


def test_sigterm_in_the_python_api_writes_the_result_cancels_the_run_and_raises(tmp_path):
    import os
    import signal

    from daf.interrupts import Interrupted

    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(Interrupted) as stopped:
            daf_run_comparison_pipeline(
                policies=["baseline", "random"],
                missions=["training_facility_1"],
                episodes_per_mission=20_000,
                output_dir=str(tmp_path),
                use_cache=False,
            )
    finally:
        timer.cancel()
    assert stopped.value.exit_code == 143
    result = stopped.value.result
    assert result.status == "failed" and result.outputs["interrupted_by"] == "SIGTERM"
    assert result.errors == ["policy_comparison: interrupted by SIGTERM"] and result.error_kind == STOPPED
    saved = PipelineResult.from_json(Path(result.outputs["result_path"]).read_text())
    assert saved.errors == result.errors

    async def state() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(result.outputs["flow_run_id"])).state.type.value

    assert asyncio.run(state()) == "CANCELLED"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the caller's handler is back
