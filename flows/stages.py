"""Stage bodies shared by several flows: validating and evaluating policies on missions, comparing them, reporting."""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger
from prefect.states import State
from prefect.utilities.annotations import quote

from daf.comparison import display_names, invalid_actions, report_metadata, summary_statistics
from daf.config import DAFConfig, PolicyEntry
from daf.events import EvaluationFinished
from daf.flows.common import Pipeline, flow_run_reference, run_on_configured_runner
from daf.tasks.artifacts import publish_leaderboard
from daf.tasks.common import configured, log_event
from daf.tasks.comparison import report_task, statistics_task
from daf.tasks.environment import check_environment_task
from daf.tasks.evaluation import evaluate_task


def validate_policies(config: DAFConfig, entries: list[PolicyEntry], missions: list[str]) -> list[str]:
    """The environment check for these policies on these missions; their unique display names."""
    names = display_names(entries)
    check_environment_task(
        missions,
        [e.class_path for e in entries],
        config.output_dir,
        config.device,
        [(e.class_path, e.data_path) for e in entries],
        config.dask_address,
    )
    return names


def evaluate_all(
    entries: list[PolicyEntry],
    names: list[str],
    missions: list[str],
    episodes: int,
    config: DAFConfig,
    parallel: bool,
) -> list[dict]:
    """Every policy on every mission, each on its own, on the configured task runner; concurrent when `parallel`."""
    device = config.device.replace("auto", "cpu")  # "auto" evaluates on the CPU; a device named is used as given
    calls = [
        dict(entry=entry, name=name, mission=mission, episodes=episodes, seed=config.seed, device=device)
        for entry, name in zip(entries, names)
        for mission in missions
    ]
    logger = get_run_logger()
    completed = [0]

    def report(call: dict[str, Any], state: State) -> None:
        completed[0] += 1
        reused = state.name == "Cached"
        event = EvaluationFinished(call["name"], call["mission"], episodes, completed[0], len(calls), reused)
        log_event(logger, event)

    return run_on_configured_runner(configured(evaluate_task, config), calls, config, parallel, on_done=report)


REPORT_STAGE = "report_generation"


def compare_and_report(
    pipeline: Pipeline,
    evaluations: list[dict],
    entries: list[PolicyEntry],
    names: list[str],
    config: DAFConfig,
    *,
    title: str,
    stats_stage: str,
    stats_required: bool,
    alpha: float = 0.05,
    correction: str = "holm",
    training_metrics: dict[str, str] | None = None,
) -> None:
    """Statistics (stage `stats_stage`), then the report and UI artifacts (stage REPORT_STAGE, optional); outputs
    go into the pipeline result. The missions and episodes are the evaluations' own; `training_metrics` (policy
    name -> its training run's metrics.jsonl) puts learning curves in the report."""
    missions = list(dict.fromkeys(ev["mission"] for ev in evaluations))
    episodes = len(evaluations[0]["rewards"])
    statistics = pipeline.stage(
        stats_stage,
        configured(statistics_task, config),
        quote(evaluations),
        alpha,
        correction,
        config.seed,
        required=stats_required,
    )
    if statistics is None:
        return
    outputs = pipeline.result.outputs
    outputs["statistics"] = statistics
    outputs["summary_statistics"] = summary_statistics(statistics)
    metadata: dict[str, Any] = report_metadata(entries, names, missions, episodes, config.seed)
    metadata["flow_run"] = flow_run_reference()
    metadata["invalid_actions"] = invalid_actions(evaluations)
    report = pipeline.stage(
        REPORT_STAGE,
        report_task,
        statistics,
        metadata,
        str(pipeline.run_dir / "report"),
        title,
        training_metrics,
        required=False,
    )
    if report is None:
        return
    outputs.update(report_html=report["html"], report_json=report["json"], report_markdown=report["markdown"])
    try:
        name = pipeline.result.pipeline_name
        publish_leaderboard(statistics["leaderboard"], report["markdown_text"], name)
    except Exception as exc:  # the UI being unreachable does not invalidate the report on disk
        logging.getLogger(__name__).warning("%s: artifacts not published: %s", REPORT_STAGE, exc)
