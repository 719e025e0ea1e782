"""Sweep trials as Prefect task runs: `trial_task` trains one trial of the shared study wherever the task runner
puts it (a thread, a process, a Dask worker on another machine), and `TaskRunnerStarter` is the TrialStarter with
which the sweep flow drives the study (daf.sweeps._driver). The study is the sweep's cache: a re-run flow continues
it and never trains a finished trial again, so trials are not cached by Prefect."""

from __future__ import annotations

from collections.abc import Callable

from prefect import Task, get_run_logger, task
from prefect.futures import PrefectFuture
from prefect.runtime import task_run
from prefect.task_runners import TaskRunner

from daf.config import DAFSweepConfig
from daf.events import TrialFinished
from daf.faults import maybe_fail
from daf.interrupts import stop_child_processes
from daf.sweeps import TrialTicket, run_trial
from daf.tasks.artifacts import ProgressArtifact
from daf.tasks.common import RETRY_OPTIONS, log_event, retry_transient, training_progress


def _run_name() -> str:
    config: DAFSweepConfig = task_run.parameters["config"]
    return f"sweep {config.name} trial {task_run.parameters['ticket'].number}"


@task(name="trial", task_run_name=_run_name, retry_condition_fn=retry_transient, **RETRY_OPTIONS)
def trial_task(config: DAFSweepConfig, storage: str, ticket: TrialTicket) -> dict:
    """Train, score and record one trial; its hyperparameters are the ticket's (shown with the task run)."""
    maybe_fail("trial")
    title = f"sweep {config.name} trial {ticket.number}: {ticket.params}"
    return run_trial(config, storage, ticket, progress=training_progress(title))


class TaskRunnerStarter:
    """Starts each trial as a `trial_task` run on `runner` (the flow's task runner)."""

    def __init__(self, runner: TaskRunner, config: DAFSweepConfig, storage: str, gpu: bool):
        self.runner, self.config, self.storage = runner, config, storage
        # GPU trials carry the tag the deployments' "gpu" concurrency limit applies to.
        self.task: Task = trial_task.with_options(tags={"gpu"}) if gpu else trial_task

    def start(self, ticket: TrialTicket) -> PrefectFuture:
        return self.runner.submit(self.task, {"config": self.config, "storage": self.storage, "ticket": ticket})

    def stop(self) -> None:
        # Trials on threads stop at their next update by themselves (daf.interrupts.stop_requested); those in a
        # process runner's worker processes are stopped with them. A trial on a Dask worker runs to its end (Dask
        # cannot stop a running task) and records its outcome in the study itself.
        stop_child_processes()


def sweep_progress(config: DAFSweepConfig) -> Callable[[TrialFinished], None]:
    """Each finished trial into the flow's log (and so the CLI's progress) and onto the sweep's progress artifact."""
    logger = get_run_logger()
    bar = ProgressArtifact(f"sweep {config.name}: trials", every=0.0)

    def on_trial(event: TrialFinished) -> None:
        bar.update(event.completed, event.total)
        log_event(logger, event)

    return on_trial
