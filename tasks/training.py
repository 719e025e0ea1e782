"""Training as a task: cached on the validated config and the warm-start weights, retried on transient faults."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.runtime import flow_run, task_run

from daf.config import EXECUTION_FIELDS, DAFConfig, DAFTrainingConfig
from daf.content import mission_digest, path_digest, policy_source_digest
from daf.events import StageNote, TrainingProgress
from daf.faults import maybe_fail
from daf.tasks.artifacts import ProgressArtifact
from daf.tasks.common import RETRY_OPTIONS, configured, log_event, make_cache_key, retry_transient, uses_gpu
from daf.training import train


def _cache_key(context, parameters) -> str:
    config: DAFTrainingConfig = parameters["config"]
    payload = config.model_dump(mode="json", exclude=EXECUTION_FIELDS)
    # What training reads, by content: the warm-start weights, the missions' resolved configs, the policy's code.
    payload["warm_start_sha256"] = path_digest(config.policy_data_path)
    payload["missions_sha256"] = [mission_digest(m) for m in config.missions]
    payload["policy_source"] = policy_source_digest(config.policy_class_path)
    return make_cache_key(train_task.fn, payload)


def _run_name() -> str:
    config: DAFTrainingConfig = task_run.parameters["config"]
    return f"training {config.policy_class_path} on {', '.join(config.missions)}"


@task(
    name="training",
    task_run_name=_run_name,
    cache_policy=CacheKeyFnPolicy(cache_key_fn=_cache_key),
    retry_condition_fn=retry_transient,
    persist_result=True,
    **RETRY_OPTIONS,
)
def train_task(config: DAFTrainingConfig) -> dict:
    maybe_fail("training")
    if config.run_id is None:
        # Stable within this flow run, so a retried attempt resumes the crashed attempt's checkpoints,
        # and distinct between flow runs, so concurrent pipelines never share a run directory.
        salt = (flow_run.get_id() or "local")[:8]
        config = config.model_copy(update={"run_id": f"{config.policy_class_path.rsplit('.', 1)[-1]}-{salt}"})
    logger = get_run_logger()
    bar = ProgressArtifact(f"training {config.policy_class_path} on {', '.join(config.missions)}")
    last_logged = [0]

    def on_progress(event: TrainingProgress) -> None:
        bar.update(event.step, event.total_steps)
        # Every 10 % of the run into the log (and so onto the progress display), not every update.
        if event.step - last_logged[0] >= event.total_steps / 10 or event.step >= event.total_steps:
            last_logged[0] = event.step
            log_event(logger, event)

    result = train(config, progress=on_progress)
    return result.to_dict()


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
