"""Sweep pipeline: environment validation -> sweep execution -> best config extraction -> (optional) comparison."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import State

from daf.comparison import evaluation_results
from daf.config import DAFSweepConfig, PolicyEntry
from daf.flows.common import Pipeline, run_pipeline, task_runner_for
from daf.flows.stages import compare_and_report, evaluate_all
from daf.sweeps import BestConfig, run_sweep, storage_url
from daf.tasks.common import uses_gpu
from daf.tasks.environment import check_environment_task
from daf.tasks.sweeps import TaskRunnerStarter, sweep_progress

TOP_K = 3


@flow(name="sweep", log_prints=True)
def sweep_flow(
    config: DAFSweepConfig, compare_best: bool = False, comparison_episodes: int = 10, parallel_stages: bool = False
) -> State:
    """Search hyperparameters (every trial trains), pick the best, optionally compare the top trials.

    Args:
        config: The search: policy, missions, search space, strategy, trials and their budget.
        compare_best: Compare the best trials' policies with corrected tests after the search.
        comparison_episodes: Episodes per mission in that comparison.
        parallel_stages: Run trials at once, up to max_parallel_jobs.
    """

    def body(p: Pipeline, config: DAFSweepConfig) -> None:
        outputs = p.result.outputs
        p.stage(
            "environment_validation",
            check_environment_task,
            config.missions,
            [config.policy_class_path],
            config.output_dir,
            config.device,
            [(config.policy_class_path, config.policy_data_path)],
            config.dask_address,
        )
        # Trials run in parallel (up to max_parallel_jobs) only when parallel stages are asked for.
        run_cfg = config if parallel_stages else config.model_copy(update={"max_parallel_jobs": 1})
        sweep = p.stage("sweep_execution", _run_trials, run_cfg)
        outputs["sweep_results"] = sweep
        outputs["trials"] = sweep["trials"]
        best = p.stage("best_config_extraction", _best, sweep)
        outputs["best_config"] = best
        outputs["best_checkpoint"] = best.checkpoint
        if compare_best:
            entries = _top_entries(sweep, config) + [PolicyEntry(class_path="baseline")]
            names = [e.name or e.class_path for e in entries]
            evaluations = p.stage(
                "comparison",
                evaluate_all,
                entries,
                names,
                config.missions,
                comparison_episodes,
                config,
                parallel_stages,
                required=False,
            )
            if evaluations is not None:
                outputs["evaluation_results"] = evaluation_results(evaluations)
                compare_and_report(
                    p,
                    evaluations,
                    entries,
                    names,
                    config,
                    title=f"Sweep {config.name}: best trials",
                    stats_stage="statistical_testing",
                    stats_required=False,
                )

    return run_pipeline("sweep", config, body)


def _best(sweep: dict) -> BestConfig:
    best = sweep.get("best_config")
    if not best or not best.get("checkpoint"):
        raise RuntimeError("no trial completed, so there is no best configuration")
    return BestConfig(**best)


def _run_trials(config: DAFSweepConfig) -> dict:
    """Drive the study from this flow run: each trial a task run on the configured task runner."""
    with task_runner_for(config) as runner:
        starter = TaskRunnerStarter(runner, config, storage_url(config), gpu=uses_gpu(config))
        result = run_sweep(config, progress=sweep_progress(config), starter=starter)
    logger = get_run_logger()
    for note in result.notes:  # e.g. the study was complete already, or the compute budget ended the sweep
        logger.info(note)
    return result.to_dict()


def _top_entries(sweep: dict, config: DAFSweepConfig) -> list[PolicyEntry]:
    done = [t for t in sweep["trials"] if t["state"] == "COMPLETE" and t.get("checkpoint")]
    reverse = config.optimize_direction == "maximize"
    done.sort(key=lambda t: t["value"], reverse=reverse)
    return [
        PolicyEntry(class_path=config.policy_class_path, data_path=t["checkpoint"], name=f"trial-{t['number']}")
        for t in done[:TOP_K]
    ]
