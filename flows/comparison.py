"""Comparison pipeline: environment validation -> policy comparison -> statistical testing -> report."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from daf.comparison import evaluation_results
from daf.config import DAFComparisonConfig
from daf.flows.common import Pipeline, run_pipeline
from daf.flows.stages import compare_and_report, evaluate_all, validate_policies


@flow(name="comparison", log_prints=True)
def comparison_flow(config: DAFComparisonConfig) -> State:
    """Evaluate every policy on every mission on its own, then compare them with corrected tests.

    Args:
        config: The comparison: policies, missions, episodes, significance level and correction.
    """

    def body(p: Pipeline, config: DAFComparisonConfig) -> None:
        names = p.stage("environment_validation", validate_policies, config, config.policies, config.missions)
        evaluations = p.stage(
            "policy_comparison",
            evaluate_all,
            config.policies,
            names,
            config.missions,
            config.episodes_per_mission,
            config,
            config.parallel_evaluation,
        )
        p.result.outputs["evaluation_results"] = evaluation_results(evaluations)
        compare_and_report(
            p,
            evaluations,
            config.policies,
            names,
            config,
            title=config.report_title,
            stats_stage="statistical_testing",
            stats_required=True,
            alpha=config.alpha,
            correction=config.correction,
        )

    return run_pipeline("comparison", config, body)
