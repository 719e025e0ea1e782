"""Running a sweep's trials: in this process, or in up to `max_parallel_jobs` spawned worker processes that each
load the study from storage and run their share; one trial at a time, each only while the compute budget has room;
progress reported from storage as trials finish; workers stopped with the sweep."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, wait

import optuna
from optuna.trial import FrozenTrial, TrialState

from daf.config import DAFSweepConfig, validate_search_space
from daf.events import ProgressFn, TrialFinished
from daf.interrupts import raise_on_stop_signals
from daf.sweeps._search import sampler
from daf.sweeps._study import budget_left, load_study, open_storage
from daf.sweeps._trial import Objective


class TrialProgress:
    """Reports each trial that finishes during this run, read from storage (works across processes)."""

    def __init__(self, callback: ProgressFn | None, study: optuna.Study, total: int):
        self.callback = callback
        self.total = total
        self.seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def __call__(self, study: optuna.Study, _trial: FrozenTrial | None = None) -> None:
        if self.callback is None:
            return
        trials = study.get_trials(deepcopy=False)
        completed = sum(t.state == TrialState.COMPLETE for t in trials)
        for t in trials:
            if t.state.is_finished() and t.number not in self.seen:
                self.seen.add(t.number)
                value = t.value if t.state == TrialState.COMPLETE else None
                self.callback(TrialFinished(t.number, t.state.name, value, completed, self.total, dict(t.params)))


def run_trials(config: DAFSweepConfig, url: str, study: optuna.Study, n: int, progress: TrialProgress) -> None:
    """Run `n` more trials of the study, in parallel worker processes when max_parallel_jobs allows."""
    session = len(study.trials)
    workers = min(config.max_parallel_jobs, n)
    if workers == 1:
        optimize(config, url, n, 0, session, 1, progress)
        return
    shares = [n // workers + (i < n % workers) for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=raise_on_stop_signals) as pool:
        futures = [pool.submit(optimize, config, url, k, i, session, workers) for i, k in enumerate(shares)]
        pending = set(futures)
        try:
            while pending:
                _, pending = wait(pending, timeout=2.0)
                progress(study)
        except BaseException:  # a stop signal: the workers stop their trials too (marked interrupted), then exit
            _stop_workers(pool)
            raise
        for future in futures:
            future.result()  # a worker that died outside a trial (e.g. storage down) is an error of the sweep


def optimize(
    config: DAFSweepConfig,
    url: str,
    n_trials: int,
    worker: int,
    session: int,
    workers: int,
    progress: TrialProgress | None = None,
) -> None:
    """Run `n_trials` trials of the stored study; the body of every worker process."""
    space = validate_search_space(config.search_space)
    study = load_study(config, open_storage(url), sampler(config, space, worker, session))
    threads = max(1, (os.cpu_count() or 1) // config.max_parallel_jobs)
    objective = Objective(config, space, threads, workers)
    # One trial at a time: the compute budget is checked before each trial starts.
    for _ in range(n_trials):
        if budget_left(config, study) < config.training_steps_per_trial:
            return
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[progress] if progress else None)


def _stop_workers(pool: ProcessPoolExecutor, grace_s: float = 30.0) -> None:
    workers = multiprocessing.active_children()
    for proc in workers:
        proc.terminate()  # SIGTERM: Interrupted in the worker (raise_on_stop_signals)
    deadline = time.monotonic() + grace_s
    for proc in workers:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)
