"""The pipeline commands, each running one orchestrator of daf.orchestrators (so a Prefect flow): train, compare,
sweep, benchmark. Each declares the flags it maps onto its config; the options they share come from
`pipeline_command`, their input checks from daf.cli.input_checks, the run itself from `run_with_progress`."""

from __future__ import annotations

from typing import Annotated

import typer

from daf.cli.configs import parse_policies
from daf.cli.exits import BadInput
from daf.cli.input_checks import check_missions, check_policies, check_trained_policy
from daf.cli.options import EpisodesOpt, MissionsOpt, ParallelOpt, PipelineOptions, config_option, pipeline_command
from daf.cli.running import run_with_progress


@pipeline_command(partial_when="the evaluation failed")
def train(
    options: PipelineOptions,
    policy: Annotated[str | None, typer.Option("--policy", "-p", help="Trainable policy (lstm, mlp, ...).")] = None,
    data_path: Annotated[str | None, typer.Option("--data-path", help="Warm-start weights.")] = None,
    mission: MissionsOpt = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Agent-steps to train for.")] = None,
    eval_mission: Annotated[
        list[str] | None, typer.Option("--eval-mission", help="Evaluate on this mission afterwards (repeatable).")
    ] = None,
    eval_episodes: Annotated[int | None, typer.Option("--eval-episodes")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Name of the run (resumes its checkpoints).")] = None,
) -> None:
    """Train a policy with PPO (training pipeline): validation -> training -> checkpoint -> evaluation."""
    from daf.config import DAFTrainingConfig

    cfg = options.load(
        DAFTrainingConfig,
        policy_class_path=policy,
        policy_data_path=data_path,
        missions=mission,
        num_training_steps=steps,
        eval_missions=eval_mission,
        eval_episodes=eval_episodes,
        run_id=run_id,
    )
    check_missions([*cfg.missions, *cfg.eval_missions])
    check_trained_policy(cfg)

    from daf.orchestrators import daf_run_training_pipeline

    run_with_progress("training", lambda: daf_run_training_pipeline(config=cfg))


@pipeline_command(partial_when="the report failed")
def compare(
    options: PipelineOptions,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy", "-p", help="class_path, class_path:data_path or name=class_path:data_path (repeatable)."
        ),
    ] = None,
    mission: MissionsOpt = None,
    episodes: EpisodesOpt = None,
    parallel: ParallelOpt = None,
) -> None:
    """Compare policies (comparison pipeline): evaluation -> corrected significance tests -> HTML report."""
    from daf.config import DAFComparisonConfig

    cfg = options.load(
        DAFComparisonConfig,
        policies=parse_policies(policy),
        missions=mission,
        episodes_per_mission=episodes,
        parallel_evaluation=parallel,
    )
    check_missions(cfg.missions)
    check_policies(cfg.policies)

    from daf.orchestrators import daf_run_comparison_pipeline

    run_with_progress("comparison", lambda: daf_run_comparison_pipeline(config=cfg))


@pipeline_command(
    config=config_option("Sweep YAML (DAFSweepConfig).", required=True), partial_when="the comparison failed"
)
def sweep(
    options: PipelineOptions,
    trials: Annotated[int | None, typer.Option("--trials", help="Trials to run (default: grid size, or 10).")] = None,
    compare_best: Annotated[
        bool, typer.Option("--compare-best", help="Compare the top trials with the baseline afterwards.")
    ] = False,
    comparison_episodes: Annotated[int, typer.Option("--comparison-episodes", help="Episodes per mission.")] = 10,
    parallel: Annotated[bool, typer.Option("--parallel", help="Run trials concurrently (max_parallel_jobs).")] = False,
) -> None:
    """Hyperparameter sweep (sweep pipeline): validation -> trials -> best config -> (optional) comparison."""
    from daf.config import DAFSweepConfig

    if comparison_episodes < 1:
        raise BadInput(f"--comparison-episodes: must be >= 1, got {comparison_episodes}")
    cfg = options.load(DAFSweepConfig, num_trials=trials)
    check_missions(cfg.missions)
    check_trained_policy(cfg)

    from daf.orchestrators import daf_run_sweep_pipeline

    run_with_progress(
        "sweep",
        lambda: daf_run_sweep_pipeline(
            config=cfg, compare_best=compare_best, comparison_episodes=comparison_episodes, parallel_stages=parallel
        ),
    )


@pipeline_command(partial_when="the package failed")
def benchmark(
    options: PipelineOptions,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="Policy to benchmark (repeatable; trained first when trainable without "
            "data_path): class_path[:data_path] or name=class_path:data_path.",
        ),
    ] = None,
    mission: MissionsOpt = None,
    training_mission: Annotated[
        list[str] | None, typer.Option("--training-mission", help="Train on these (default: --mission).")
    ] = None,
    episodes: EpisodesOpt = None,
    training_steps: Annotated[int | None, typer.Option("--training-steps", help="Agent-steps of training.")] = None,
    package: Annotated[
        bool | None, typer.Option("--package/--no-package", help="Build and validate a deployment bundle.")
    ] = None,
    baselines: Annotated[
        bool | None, typer.Option("--baselines/--no-baselines", help="Compare with the baseline policies.")
    ] = None,
    parallel: ParallelOpt = None,
) -> None:
    """Benchmark (benchmark pipeline): validation -> training -> evaluation -> comparison -> deployment package."""
    from daf.config import DAFBenchmarkConfig, PolicyEntry

    cfg = options.load(
        DAFBenchmarkConfig,
        policies=parse_policies(policy),
        missions=mission,
        training_missions=training_mission,
        episodes_per_mission=episodes,
        training_steps=training_steps,
        create_deployment_package=package,
        compare_baselines=baselines,
        parallel_evaluation=parallel,
    )
    check_missions([*cfg.missions, *(cfg.training_missions or [])])
    given = {e.class_path for e in cfg.policies}
    extra = [PolicyEntry(class_path=b) for b in cfg.baselines if b not in given] if cfg.compare_baselines else []
    check_policies([*cfg.policies, *extra])

    from daf.orchestrators import daf_run_benchmark_pipeline

    run_with_progress("benchmark", lambda: daf_run_benchmark_pipeline(config=cfg))
