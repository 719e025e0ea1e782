"""run_sweep: validate, take the sweep directory's lock, open (or continue) the study, run the remaining trials,
collect the result."""

from __future__ import annotations

from daf.config import DAFSweepConfig
from daf.events import ProgressFn
from daf.locks import directory_lock
from daf.sweeps._errors import SweepError
from daf.sweeps._results import SweepResult, collect
from daf.sweeps._study import (
    check_fingerprint,
    counts_as_finished,
    load_study,
    open_storage,
    requeue_interrupted,
    storage_url,
    sweep_dir,
)
from daf.sweeps._validation import validate_sweep
from daf.sweeps._workers import TrialProgress, run_trials


def run_sweep(config: DAFSweepConfig, progress: ProgressFn | None = None) -> SweepResult:
    """Run (or continue) the sweep: train and evaluate every trial, then report the best configuration."""
    validate_sweep(config)
    url = storage_url(config)
    directory = sweep_dir(config)
    with directory_lock(directory, f"sweep {directory.name!r}", SweepError):
        storage = open_storage(url)
        study = load_study(config, storage)
        check_fingerprint(study, config)
        requeue_interrupted(study, storage)
        total = config.total_trials()
        remaining = total - sum(counts_as_finished(t) for t in study.get_trials(deepcopy=False))
        reporter = TrialProgress(progress, study, total)
        if remaining > 0:
            run_trials(config, url, study, remaining, reporter)
            return collect(config, url, study)
        done = (
            f"study {config.name!r} in {url} already has {total - remaining} of {total} trials finished: no trial "
            "ran; raise num_trials (or max_agent_steps) to continue it, or give the sweep another name"
        )
        return collect(config, url, study, [done])
