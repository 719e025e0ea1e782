"""Training pipeline: environment validation -> training -> checkpoint saving -> (optional) evaluation -> report
(optional: the training report, with the learning curve)."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from daf.comparison import evaluation_results
from daf.config import DAFTrainingConfig, PolicyEntry
from daf.flows.common import Pipeline, flow_run_reference, run_pipeline
from daf.flows.stages import REPORT_STAGE, evaluate_all
from daf.policies.neural import load_weights
from daf.tasks.comparison import training_report_task
from daf.tasks.environment import check_environment_task
from daf.tasks.training import run_training


@flow(name="training", log_prints=True)
def training_flow(config: DAFTrainingConfig) -> State:
    """Train one policy with PPO, verify its checkpoint, and evaluate it on the evaluation missions.

    Args:
        config: The training run: policy, missions, agent-steps, evaluation, every PPO hyperparameter.
    """

    def body(p: Pipeline, config: DAFTrainingConfig) -> None:
        p.stage(
            "environment_validation",
            check_environment_task,
            [*config.missions, *config.eval_missions],
            [config.policy_class_path],
            config.output_dir,
            config.device,
            [(config.policy_class_path, config.policy_data_path)],
            config.dask_address,
        )
        training = p.stage("training", run_training, config, config)
        p.result.outputs["training"] = training
        p.result.outputs["session"] = {
            "run_id": training["run_id"],
            "run_dir": training["run_dir"],
            "config": config.model_dump(mode="json"),
        }
        p.stage("checkpoint_saving", _verify_checkpoint, training)
        p.result.outputs["final_checkpoint"] = training["final_checkpoint"]
        p.result.outputs["checkpoint_dir"] = training["checkpoint_dir"]
        if config.eval_missions:
            entry = PolicyEntry(
                class_path=training["class_path"], data_path=training["final_checkpoint"], name=training["run_id"]
            )
            evaluations = p.stage(
                "evaluation",
                evaluate_all,
                [entry],
                [entry.name],
                config.eval_missions,
                config.eval_episodes,
                config,
                False,
                required=False,
            )
            if evaluations is not None:
                p.result.outputs["evaluation_results"] = evaluation_results(evaluations)
        report = p.stage(
            REPORT_STAGE,
            training_report_task,
            training,
            config.model_dump(mode="json"),
            p.result.outputs.get("evaluation_results", []),
            str(p.run_dir / "report"),
            flow_run_reference(),
            required=False,
        )
        if report is not None:
            p.result.outputs["report_html"] = report

    return run_pipeline("training", config, body)


def _verify_checkpoint(training: dict) -> None:
    """The saved checkpoint must load safely before anything downstream relies on it."""
    load_weights(training["final_checkpoint"])
