"""One trial: the DAFTrainingConfig it trains, the intermediate evaluations it reports to the pruner while it
trains, its score (the final checkpoint evaluated on `episodes_per_trial` seeded episodes per mission), and
`run_trial`, which does all of it for a trial the study handed out, in whatever process or machine runs it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from mettagrid.policy.policy import PolicySpec

from daf.config import DAFSweepConfig, DAFTrainingConfig, Role, SearchDimension, fields_with, validate_search_space
from daf.evaluation import evaluate, evaluate_policy
from daf.events import ProgressFn
from daf.interrupts import describe_stop
from daf.policies.neural import NeuralPolicy
from daf.stats import iqm
from daf.sweeps._locking import study_lock
from daf.sweeps._search import suggest
from daf.sweeps._study import HEARTBEAT_S, load_study, open_storage, retry_interrupted, sweep_dir, worker_identity
from daf.training import StopTraining, train

# DAFTrainingConfig fields each trial sets itself (trial_config); a `training` override of them would be lost.
SWEEP_OWNED = fields_with(DAFTrainingConfig, Role.SWEEP_OWNED)


def trial_config(
    config: DAFSweepConfig, params: dict[str, Any], number: int, threads: int, workers: int
) -> DAFTrainingConfig:
    """What trial run `number` trains: the sweep's resources and `training` overrides, then `params`."""
    # By default parallel trials share one machine's cores and one GPU; `training` may set torch_threads and
    # gpu_memory_fraction per trial instead (trials spread over machines, one GPU per Dask worker).
    shared_gpu = {"gpu_memory_fraction": config.gpu_memory_fraction / workers}
    fields = {"torch_threads": threads, **config.resources(), **shared_gpu, **config.training, **params}
    fields.update(
        policy_class_path=config.policy_class_path,
        policy_data_path=config.policy_data_path,
        missions=list(config.missions),
        num_training_steps=config.training_steps_per_trial,
        run_id=f"{config.name}-trial-{number}",
        checkpoint_dir=str(sweep_dir(config) / "checkpoints"),
        seed=config.seed + number,
        progress=False,
    )
    return DAFTrainingConfig.from_dict(fields, source=f"trial {number} {params}")


def score(rewards: dict[str, list[float]], objective: str) -> float:
    """The objective over the episode rewards of all missions pooled."""
    pooled = [r for episode_rewards in rewards.values() for r in episode_rewards]
    return iqm(pooled) if objective == "iqm" else float(np.mean(pooled))


class PruningHook:
    """Called after every PPO update: every `interval` agent-steps, evaluate, report and maybe stop."""

    def __init__(self, trial: optuna.Trial, config: DAFSweepConfig):
        self.trial = trial
        self.config = config
        self.budget = config.training_steps_per_trial
        self.interval = config.eval_interval_steps or max(1, self.budget // 4)
        self.next_report = self.interval
        self.global_step = 0

    def __call__(self, global_step: int, policy: NeuralPolicy) -> None:
        self.global_step = global_step
        # Without a pruner nothing reads intermediate values: skip their evaluations. The last update is
        # followed by the full evaluation; no intermediate one is needed there either.
        if self.config.pruner == "none" or global_step < self.next_report or global_step >= self.budget:
            return
        # Report at the interval boundary, so trials with other rollout sizes are compared at the same step.
        step = global_step // self.interval * self.interval
        self.next_report = step + self.interval
        # As many episodes as the final score: with 3 the pruner's verdicts were noise-driven (sweep bench).
        episodes = self.config.episodes_per_trial
        rewards = {m: evaluate_policy(policy, m, episodes, self.config.seed).rewards for m in self.config.missions}
        value = score(rewards, self.config.objective)
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise StopTraining(f"pruned at {global_step} agent-steps (intermediate value {value:.3f})")


class Objective:
    """Train one trial, record what happened in its user attrs, return its score."""

    def __init__(
        self,
        config: DAFSweepConfig,
        space: dict[str, SearchDimension],
        threads: int,
        workers: int,
        progress: ProgressFn | None = None,
    ):
        self.config = config
        self.space = space
        self.threads = threads
        self.workers = workers
        self.progress = progress

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.space)  # the values the study already chose when it handed the trial out
        # A re-run of an interrupted trial keeps its run number: same run id (resumes) and same seed.
        run_number = trial.user_attrs.get("run_number", trial.number)
        trial.set_user_attr("run_number", run_number)
        hook = PruningHook(trial, self.config)
        started = time.perf_counter()
        try:
            tc = trial_config(self.config, params, run_number, self.threads, self.workers)
            trial.set_user_attr("run_dir", str(tc.checkpoint_root() / tc.run_id))
            return self._train_and_score(trial, tc, hook)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            trial.set_user_attr("duration_s", time.perf_counter() - started)
            trial.set_user_attr("agent_steps", max(hook.global_step, trial.user_attrs.get("agent_steps", 0)))

    def _train_and_score(self, trial: optuna.Trial, tc: DAFTrainingConfig, hook: PruningHook) -> float:
        try:
            result = train(tc, progress=self.progress, on_update=hook)
        except StopTraining as stop:
            raise optuna.TrialPruned(str(stop)) from None
        trial.set_user_attr("agent_steps", result.global_step)
        trial.set_user_attr("resumed_from_step", result.resumed_from_step)
        trial.set_user_attr("checkpoint", result.final_checkpoint)
        spec = PolicySpec(class_path=result.class_path, data_path=result.final_checkpoint)
        cfg = self.config
        rewards = {m: evaluate(spec, m, cfg.episodes_per_trial, cfg.seed).rewards for m in cfg.missions}
        trial.set_user_attr("episode_rewards", rewards)
        trial.set_user_attr("mission_means", {m: float(np.mean(r)) for m, r in rewards.items()})
        return score(rewards, cfg.objective)


@dataclass(frozen=True)
class TrialTicket:
    """A trial the study handed out (`daf.sweeps._driver`): its number and the hyperparameters it will train."""

    number: int
    params: dict[str, Any] = field(default_factory=dict)


SUPERSEDED = "SUPERSEDED"  # the outcome of a trial that another sweep run had re-queued before it started here


def run_trial(
    config: DAFSweepConfig, url: str, ticket: TrialTicket, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Train and score trial `ticket.number` of the study in `url`, then tell the study its outcome; returns
    {"number", "state", "value"}. Runs in any process that reaches the storage: its heartbeat tells other sweep runs
    it is alive, and a stop signal queues it again (it resumes its checkpoint on the next run). A failure of the
    training is the trial's outcome (FAIL, with its error), not an exception."""
    study = load_study(config, open_storage(url))
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, ticket.number)
    # Claimed under the study's lock, which fail_dead_trials holds too: a trial is either re-queued as dead or
    # claimed by this process (a Dask re-run of a lost task), never both.
    with study_lock(url, config.name):
        if storage.get_trial(trial_id).state != optuna.trial.TrialState.RUNNING:
            return {"number": ticket.number, "state": SUPERSEDED, "value": None}
        for key, value in worker_identity().items():
            storage.set_trial_user_attr(trial_id, key, value)
        storage.record_heartbeat(trial_id)
    trial = optuna.Trial(study, trial_id)
    threads = max(1, (os.cpu_count() or 1) // config.max_parallel_jobs)
    objective = Objective(
        config, validate_search_space(config.search_space), threads, config.max_parallel_jobs, progress
    )
    with _heartbeat(storage, trial_id):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            frozen = study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        except Exception:  # recorded in the trial's error attr by the objective
            frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        except BaseException as exc:  # a stop signal: queued again, it runs on the next run of the sweep
            reason = f"{describe_stop(exc)}; it runs again when the sweep is resumed"
            with study_lock(url, config.name):
                retry_interrupted(study, storage.get_trial(trial_id), reason, automatic=False)
            raise
        else:
            # A NaN score makes it FAIL (Optuna's rule); a trial another run gave up on meanwhile keeps that verdict.
            frozen = study.tell(trial, value, skip_if_finished=True)
    value = frozen.value if frozen.state == optuna.trial.TrialState.COMPLETE else None
    return {"number": ticket.number, "state": frozen.state.name, "value": value}


@contextmanager
def _heartbeat(storage: optuna.storages.RDBStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every HEARTBEAT_S while the block runs (as Optuna's optimize does for its own
    trials; a trial run by ask/tell from elsewhere has to do it itself)."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
