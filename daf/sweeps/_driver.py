"""Driving a sweep with Optuna's ask/tell: ask the shared study for a trial, start it through a `TrialStarter`
(in this process, in local worker processes, or, from the sweep flow, as a Prefect task run on any task runner),
keep at most `max_parallel_jobs` running, and stop once the study has its trials.

Several sweep runs may drive one study at once (the same name and storage, from any machines): each asks under
the study's lock (daf.sweeps._locking) and counts the trials every run has running, so together they run
`total_trials()` trials and never one grid point twice; each waits for the others' running trials before it
returns, so every run reports the union. A trial whose process dies is queued again (daf.sweeps._study).
"""

from __future__ import annotations

import multiprocessing
import queue
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from daf.config import DAFSweepConfig, validate_search_space
from daf.events import ProgressFn, TrialFinished
from daf.interrupts import (
    raise_if_stop_requested,
    raise_on_stop_signals,
    request_stop,
    signal_of,
    stop_at_safe_points,
    stop_child_processes,
)
from daf.sweeps._locking import study_lock
from daf.sweeps._search import sampler, suggest
from daf.sweeps._study import budget_left, counts_as_finished, fail_dead_trials, load_study, retry_interrupted
from daf.sweeps._trial import TrialTicket, run_trial

POLL_S = 2.0  # how often a run waiting on trials checks for dead ones and reports finished ones


class TrialFuture(Protocol):
    """What starting a trial returns: a concurrent.futures.Future or a Prefect future."""

    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...

    def result(self) -> Any: ...


class TrialStarter(Protocol):
    def start(self, ticket: TrialTicket) -> TrialFuture:
        """Start training the trial (run_trial) somewhere; the future's result is run_trial's."""

    def stop(self) -> None:
        """The sweep is stopping (a stop signal): make the trials it started stop at their next safe point."""


class InThisProcess:
    """Each trial runs when started, in this process (max_parallel_jobs 1)."""

    def __init__(self, config: DAFSweepConfig, url: str):
        self.config, self.url = config, url

    def start(self, ticket: TrialTicket) -> Future:
        future: Future = Future()
        future.set_result(run_trial(self.config, self.url, ticket))
        return future

    def stop(self) -> None:
        pass  # the trial ran in this thread: the stop signal reached it already


class InWorkerProcesses:
    """Trials in up to max_parallel_jobs spawned local processes (run_sweep without an orchestrator)."""

    def __init__(self, config: DAFSweepConfig, url: str):
        self.config, self.url = config, url
        context = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(config.max_parallel_jobs, mp_context=context, initializer=raise_on_stop_signals)

    def start(self, ticket: TrialTicket) -> Future:
        return self.pool.submit(run_trial, self.config, self.url, ticket)

    def stop(self) -> None:
        stop_child_processes()  # SIGTERM: Interrupted in the worker (raise_on_stop_signals), its trial queued again

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class TrialProgress:
    """Reports each trial that finishes while this run drives the study (its own or another run's)."""

    def __init__(self, callback: ProgressFn | None, study: optuna.Study, total: int):
        self.callback = callback
        self.total = total
        self.seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def __call__(self, study: optuna.Study) -> None:
        if self.callback is None:
            return
        trials = study.get_trials(deepcopy=False)
        completed = sum(t.state == TrialState.COMPLETE for t in trials)
        for t in trials:
            # An interrupted trial is not a result: its re-run is, and is reported when it finishes.
            if counts_as_finished(t) and t.number not in self.seen:
                self.seen.add(t.number)
                value = t.value if t.state == TrialState.COMPLETE else None
                self.callback(TrialFinished(t.number, t.state.name, value, completed, self.total, dict(t.params)))


class _Asker:
    """Hands out the study's next trial, under the study's lock, while the sweep still needs one."""

    def __init__(self, config: DAFSweepConfig, url: str, study: optuna.Study):
        self.config, self.url = config, url
        self.space = validate_search_space(config.search_space)
        # The sampler of this run; sampling state (TPE's seed, the grid's order) is per run, the trials are shared.
        self.study = load_study(config, study._storage, sampler(config, self.space, 0, len(study.trials)))

    def next(self) -> TrialTicket | None:
        with study_lock(self.url, self.config.name):
            trials = self.study.get_trials(deepcopy=False)
            finished = sum(counts_as_finished(t) for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if finished + running >= self.config.total_trials():
                return None
            # The compute budget is checked before each trial starts (running ones reserve their full budget).
            if budget_left(self.config, self.study) < self.config.training_steps_per_trial:
                return None
            with warnings.catch_warnings():  # Optuna expects heartbeats with optimize; run_trial records them
                warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
                trial = self.study.ask()  # a queued re-run (WAITING) first, else a new point from the sampler
            params = suggest(trial, self.space)
            trial.set_user_attr("run_number", trial.user_attrs.get("run_number", trial.number))
            return TrialTicket(trial.number, params)

    def trials(self) -> dict[int, FrozenTrial]:
        """The study's trials by number (every run's), after re-queuing those whose process died."""
        with study_lock(self.url, self.config.name):
            fail_dead_trials(self.study)
        return {t.number: t for t in self.study.get_trials(deepcopy=False)}

    def requeue(self, ticket: TrialTicket, reason: str) -> None:
        """The trial's process or runner failed it (not its training): queue it again, unless already done."""
        with study_lock(self.url, self.config.name):
            trial = next(t for t in self.study.get_trials(deepcopy=False) if t.number == ticket.number)
            if trial.state == TrialState.RUNNING or trial.user_attrs.get("interrupted"):
                retry_interrupted(self.study, trial, reason)


def drive(
    config: DAFSweepConfig, url: str, study: optuna.Study, starter: TrialStarter, progress: TrialProgress
) -> None:
    """Run trials through `starter` until the study has total_trials() finished ones (or the budget ends)."""
    asker = _Asker(config, url, study)
    done: queue.Queue = queue.Queue()
    in_flight: dict[int, tuple[TrialTicket, TrialFuture]] = {}
    try:
        # A stop signal takes effect at the loop's top, or inside a trial run in this thread, never half-way
        # through a write to the study's storage (daf/interrupts.py); done.get wakes every POLL_S.
        with stop_at_safe_points():
            while True:
                raise_if_stop_requested()
                trials = asker.trials()
                # A trial of ours re-queued as dead (its worker lost, and the runner never reports back) frees its slot:
                # its re-run is asked for like any other trial. One that finished is reported by its future.
                for key, (ticket, _) in list(in_flight.items()):
                    trial = trials[ticket.number]
                    if trial.state != TrialState.RUNNING and not counts_as_finished(trial):
                        del in_flight[key]
                while len(in_flight) < config.max_parallel_jobs and (ticket := asker.next()) is not None:
                    future = starter.start(ticket)
                    in_flight[id(future)] = (ticket, future)
                    future.add_done_callback(done.put)
                if not in_flight and not any(t.state == TrialState.RUNNING for t in trials.values()):
                    return
                try:
                    finished = done.get(timeout=POLL_S)
                except queue.Empty:
                    progress(study)
                    continue
                if id(finished) not in in_flight:  # abandoned above; the study has its outcome or its re-run
                    continue
                ticket, future = in_flight.pop(id(finished))
                try:
                    future.result()
                except Exception as exc:  # not the trial's failure (run_trial records those): its process or runner
                    asker.requeue(ticket, f"interrupted: {type(exc).__name__}: {exc}")
                progress(study)
    except BaseException as exc:
        signum = signal_of(exc)
        if signum is not None:
            request_stop(signum)  # trials on other threads of this process stop at their next update
        starter.stop()
        raise
