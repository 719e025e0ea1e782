"""Training as a task: cached on the validated config and the warm-start weights, retried on transient faults."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger
from prefect.runtime import flow_run, task_run

from daf.config import EXECUTION_FIELDS, DAFConfig, DAFTrainingConfig
from daf.events import StageNote
from daf.faults import maybe_fail
from daf.tasks.common import configured, content_cached_task, content_digests, log_event, training_progress, uses_gpu
from daf.training import train


def _cache_payload(parameters: dict) -> dict:
    config: DAFTrainingConfig = parameters["config"]
    payload = config.model_dump(mode="json", exclude=EXECUTION_FIELDS)
    # The warm-start weights, the missions and the policy's code by content, not by name.
    return payload | content_digests(config.policy_class_path, config.policy_data_path, config.missions)


def _run_name() -> str:
    config: DAFTrainingConfig = task_run.parameters["config"]
    return f"training {config.policy_class_path} on {', '.join(config.missions)}"


@content_cached_task("training", _run_name, _cache_payload)
def train_task(config: DAFTrainingConfig) -> dict:
    maybe_fail("training")
    if config.run_id is None:
        # Stable within this flow run, so a retried attempt resumes the crashed attempt's checkpoints,
        # and distinct between flow runs, so concurrent pipelines never share a run directory.
        salt = (flow_run.get_id() or "local")[:8]
        config = config.model_copy(update={"run_id": f"{config.policy_class_path.rsplit('.', 1)[-1]}-{salt}"})
    title = f"training {config.policy_class_path} on {', '.join(config.missions)}"
    return train(config, progress=training_progress(title)).to_dict()


def run_training(config: DAFTrainingConfig, resources: DAFConfig) -> dict:
    """Train through the cache; a cached result whose checkpoint was deleted is recomputed."""
    task_ = configured(train_task, resources, gpu=uses_gpu(resources))
    state = task_(config, return_state=True)
    out = state.result()
    if not Path(out["final_checkpoint"]).is_file():
        return task_.with_options(refresh_cache=True)(config)
    if state.name == "Cached":  # no training happened in this run: say so beside the (absent) progress bar
        log_event(get_run_logger(), StageNote(f"training: reused the cached result of run {out['run_id']}"))
    return out
