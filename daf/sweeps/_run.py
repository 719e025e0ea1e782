"""run_sweep: validate, open (or continue) the study, drive the remaining trials, collect the result."""

from __future__ import annotations

from daf.config import DAFSweepConfig
from daf.events import ProgressFn
from daf.sweeps._driver import InThisProcess, InWorkerProcesses, TrialProgress, TrialStarter, drive
from daf.sweeps._results import SweepResult, collect
from daf.sweeps._study import check_fingerprint, counts_as_finished, load_study, open_storage, storage_url
from daf.sweeps._validation import validate_sweep


def run_sweep(
    config: DAFSweepConfig, progress: ProgressFn | None = None, starter: TrialStarter | None = None
) -> SweepResult:
    """Run (or continue) the sweep: train and evaluate its remaining trials, then report the best configuration.

    `starter` runs each trial (the sweep flow's runs them as Prefect task runs on its task runner); without one,
    trials run in this process, or in max_parallel_jobs local worker processes.
    """
    validate_sweep(config)
    url = storage_url(config)
    storage = open_storage(url)
    study = load_study(config, storage)
    check_fingerprint(study, config)
    total = config.total_trials()
    finished = sum(counts_as_finished(t) for t in study.get_trials(deepcopy=False))
    reporter = TrialProgress(progress, study, total)
    own = starter is None
    if own:
        starter = InThisProcess(config, url) if config.max_parallel_jobs == 1 else InWorkerProcesses(config, url)
    try:
        drive(config, url, study, starter, reporter)
    finally:
        if own and isinstance(starter, InWorkerProcesses):
            starter.close()
    if finished >= total:
        done = (
            f"study {config.name!r} in {url} already has {finished} of {total} trials finished: no trial "
            "ran; raise num_trials (or max_agent_steps) to continue it, or give the sweep another name"
        )
        return collect(config, url, study, [done])
    return collect(config, url, study)
