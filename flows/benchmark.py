"""Benchmark pipeline: validation -> training (policies given without a checkpoint) -> evaluation ->
comparison with baselines (optional) -> deployment package (optional)."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from daf.comparison import best_policy, evaluation_results
from daf.config import DAFBenchmarkConfig, DAFTrainingConfig, PolicyEntry
from daf.flows.common import Pipeline, run_pipeline
from daf.flows.stages import compare_and_report, evaluate_all, validate_policies
from daf.policies import is_trainable
from daf.tasks.packaging import build_package_task, validate_package_task
from daf.tasks.training import run_training


@flow(name="benchmark", log_prints=True)
def benchmark_flow(config: DAFBenchmarkConfig) -> State:
    """From policies (trained here when no checkpoint is given) to a comparison and a validated bundle.

    Args:
        config: The benchmark: policies, missions, episodes, training budget, baselines and packaging.
    """

    def body(p: Pipeline, config: DAFBenchmarkConfig) -> None:
        outputs = p.result.outputs
        entries = list(config.policies)
        given = {e.class_path for e in entries}
        baselines = [PolicyEntry(class_path=b) for b in config.baselines if b not in given]
        if not config.compare_baselines:
            baselines = []
        missions = [*config.missions, *(config.training_missions or [])]
        names = p.stage("environment_validation", validate_policies, config, entries + baselines, missions)

        to_train = [i for i, e in enumerate(entries) if e.data_path is None and is_trainable(e.class_path)]
        if to_train:
            trained = p.stage("training", _train_all, config, [entries[i] for i in to_train])
            for i, out in zip(to_train, trained):
                entries[i] = entries[i].model_copy(update={"data_path": out["final_checkpoint"]})
            outputs["training"] = {names[i]: out for i, out in zip(to_train, trained)}
            outputs["trained_checkpoints"] = {names[i]: out["final_checkpoint"] for i, out in zip(to_train, trained)}
            outputs["final_checkpoint"] = trained[0]["final_checkpoint"]

        all_entries = entries + baselines
        evaluations = p.stage(
            "evaluation",
            evaluate_all,
            all_entries,
            names,
            config.missions,
            config.episodes_per_mission,
            config,
            config.parallel_evaluation,
        )
        outputs["evaluation_results"] = evaluation_results(evaluations)
        if len(all_entries) > 1:
            compare_and_report(
                p,
                evaluations,
                all_entries,
                names,
                config,
                title="DAF benchmark report",
                stats_stage="comparison",
                stats_required=False,
                alpha=config.alpha,
                correction=config.correction,
                training_metrics={name: out["metrics_path"] for name, out in outputs.get("training", {}).items()},
            )
        if config.create_deployment_package:
            best = best_policy(evaluations, names[: len(entries)], outputs.get("statistics"))
            entry = entries[names.index(best)]
            package = p.stage(
                "deployment_package",
                _package,
                entry,
                best,
                config,
                str(p.run_dir / "package"),
                [e for e in outputs["evaluation_results"] if e["policy"] == best],
                required=False,
            )
            if package is not None:
                outputs["deployment_package"], outputs["package_validation"] = package

    return run_pipeline("benchmark", config, body)


def _train_all(config: DAFBenchmarkConfig, entries: list[PolicyEntry]) -> list[dict]:
    outs = []
    for entry in entries:
        train_config = DAFTrainingConfig(
            **config.resources(),
            **config.training,
            policy_class_path=entry.class_path,
            missions=config.training_missions or config.missions,
            num_training_steps=config.training_steps,
        )
        outs.append(run_training(train_config, config))
    return outs


def _package(entry: PolicyEntry, name: str, config: DAFBenchmarkConfig, out_dir: str, evaluation: list[dict]):
    path = build_package_task(entry, out_dir, name, config.missions, {"results": evaluation})
    report = validate_package_task(path, config.missions)
    return path, report
