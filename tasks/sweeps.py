"""The sweep driver as a task. Its Optuna study is its own cache: a retried or re-run sweep resumes it."""

from __future__ import annotations

from prefect import get_run_logger, task

from daf.config import DAFSweepConfig
from daf.events import TrialFinished
from daf.faults import maybe_fail
from daf.sweeps import run_sweep
from daf.tasks.artifacts import ProgressArtifact
from daf.tasks.common import RETRY_OPTIONS, log_event, retry_transient


@task(name="sweep", task_run_name="sweep {config.name}", retry_condition_fn=retry_transient, **RETRY_OPTIONS)
def sweep_task(config: DAFSweepConfig) -> dict:
    maybe_fail("sweep")
    logger = get_run_logger()
    bar = ProgressArtifact(f"sweep {config.name}: trials", every=0.0)

    def on_trial(event: TrialFinished) -> None:
        bar.update(event.completed, event.total)
        log_event(logger, event)

    result = run_sweep(config, progress=on_trial)
    bar.update(1, 1)  # the sweep is done, also when no trial ran because its study was already complete
    for note in result.notes:  # e.g. the study was complete already, or the compute budget ended the sweep
        logger.info(note)
    return result.to_dict()
