"""Hyperparameter sweeps where every trial really trains: Optuna studies over DAF's PPO trainer.

Each trial builds a DAFTrainingConfig from the sweep's fixed `training` overrides plus the sampled
hyperparameters, trains it from scratch (or from the sweep's warm-start weights), reports intermediate
evaluations of the in-memory policy to the pruner, and is scored by evaluating its final checkpoint on
`episodes_per_trial` seeded episodes per mission (mean or IQM of the episode rewards pooled over missions).

Storage and resume:
- The study lives in Optuna RDB storage: `config.storage` (any SQLAlchemy URL) or, by default, SQLite at
  `<output_dir>/sweeps/<name>/study.db`; trial runs live under `<output_dir>/sweeps/<name>/checkpoints/`.
- Running the same sweep again continues it: finished trials (COMPLETE, PRUNED, FAIL) are never re-run and
  only `total_trials() - finished` more trials run. Settings that change what a trial's value means
  (policy, missions, search space, budgets, objective, seed, ...) must match the stored study.
- With `max_agent_steps` (a compute budget) a trial starts only while its full budget still fits beside the
  agent-steps finished trials trained and the full budgets of trials running now; so the sweep never trains
  more than the budget, however many trials pruning cuts short. Raising the budget and running the sweep again
  continues it. (Parallel workers check it independently: two starting at the same instant can overshoot by
  one trial budget.)
- A trial still RUNNING when its process died is marked FAIL (user attr `interrupted`), does not count as
  finished, and is re-run as a new trial with the same parameters and the same run id, so its training
  resumes from the run's last checkpoint. This is safe because a lock file in the sweep directory allows one
  `run_sweep` per sweep directory at a time: while we hold it, a RUNNING trial cannot belong to a live process.
  (With a storage shared by several machines, run each sweep name from one machine only.)

Parallelism: up to `max_parallel_jobs` spawned worker processes each load the study from storage and run
their share of the trials; each trial's torch uses `cpu_count // max_parallel_jobs` threads. SQLite handles
this for sweep-sized trial counts (writes are rare and short; a 60 s busy timeout absorbs contention); use a
server database for many workers.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import optuna
from mettagrid.policy.policy import PolicySpec
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import matplotlib as optuna_plots

from daf.config import DAFSweepConfig, DAFTrainingConfig, RangeSpec, SearchDimension, validate_search_space
from daf.evaluation import evaluate, evaluate_policy
from daf.events import ProgressFn, TrialFinished
from daf.files import atomic_write_text
from daf.interrupts import describe_stop, raise_on_stop_signals
from daf.jsonable import to_jsonable
from daf.locks import directory_lock
from daf.missions import get_mission
from daf.policies.neural import NeuralPolicy
from daf.policies.registry import load_policy, require_trainable, resolve_class_path
from daf.simulation import env_interface
from daf.stats import iqm
from daf.training import StopTraining, train, validate_training_config

# DAFTrainingConfig fields each trial sets itself; a `training` override of them would be silently lost.
_SWEEP_OWNED = frozenset(
    {
        "policy_class_path",
        "policy_data_path",
        "missions",
        "num_training_steps",
        "run_id",
        "checkpoint_dir",
        "seed",
        "progress",
    }
)
# Settings that define what a trial's value means: continuing a study under other ones would mix results.
_FINGERPRINT = (
    "policy_class_path",
    "policy_data_path",
    "missions",
    "search_space",
    "strategy",
    "training_steps_per_trial",
    "episodes_per_trial",
    "objective",
    "optimize_direction",
    "training",
    "seed",
)
_TRIAL_ATTRS = (
    "duration_s",
    "checkpoint",
    "error",
    "agent_steps",
    "resumed_from_step",
    "run_dir",
    "mission_means",
    "episode_rewards",
    "retry_of",
)


class SweepError(RuntimeError):
    """The sweep cannot run (invalid setup) or produced no completed trial; the message says why."""


@dataclass
class BestConfig:
    hyperparameters: dict[str, Any]
    score: float
    trial_number: int
    checkpoint: str


@dataclass
class SweepResult:
    study_name: str
    storage: str
    output_dir: str
    trials: list[dict[str, Any]]
    best_config: BestConfig
    best_checkpoint: str
    results_path: str
    plots: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def sweep_dir(config: DAFSweepConfig) -> Path:
    return Path(config.output_dir) / "sweeps" / config.name


def storage_url(config: DAFSweepConfig) -> str:
    return config.storage or f"sqlite:///{(sweep_dir(config) / 'study.db').resolve()}"


# ---------------------------------------------------------------------------
# Validation (no compute)
# ---------------------------------------------------------------------------


def validate_sweep(config: DAFSweepConfig) -> dict[str, SearchDimension]:
    """Check everything a trial needs before any training starts; raises SweepError naming the problem."""
    try:
        space = validate_search_space(config.search_space)
        _check_overrides(config, space)
        points = _points_to_check(config, space)
        trial_configs = [_training_config(config, p, number=0, threads=1, workers=1) for p in points]
        validate_training_config(trial_configs[0])
        _check_policy(trial_configs[0])
    except ValueError as exc:
        raise SweepError(f"sweep {config.name!r}: {exc}") from None
    try:
        sweep_dir(config).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"sweep {config.name!r}: output dir {sweep_dir(config)} cannot be created: {exc}") from None
    return space


def _check_overrides(config: DAFSweepConfig, space: dict[str, SearchDimension]) -> None:
    clash = sorted(set(config.training) & (_SWEEP_OWNED | set(space)))
    if clash:
        raise ValueError(
            f"training overrides {clash} are set by the sweep itself (use the sweep's own fields or search_space)"
        )
    if config.policy_data_path and "hidden_size" in space:
        raise ValueError("search_space.hidden_size cannot be searched with a warm start: the weights fix it")
    for name, dim in space.items():
        if isinstance(dim, RangeSpec) and dim.log and dim.step is not None and not (dim.is_int and dim.step == 1):
            raise ValueError(f"search_space.{name}: a log range cannot have a step (Optuna samples it continuously)")


def _points_to_check(config: DAFSweepConfig, space: dict[str, SearchDimension]) -> list[dict[str, Any]]:
    """Every grid point (a bad combination fails now, not hours in), or the ends of every range."""
    if config.strategy == "grid":
        return [dict(zip(space, values)) for values in itertools.product(*space.values())]
    return [{name: _end(dim, pick) for name, dim in space.items()} for pick in (0, -1)]


def _end(dim: SearchDimension, pick: int) -> Any:
    if not isinstance(dim, RangeSpec):
        return dim[pick]
    value = dim.low if pick == 0 else dim.high
    return int(value) if dim.is_int else value


def _check_policy(config: DAFTrainingConfig) -> None:
    require_trainable(config.policy_class_path)
    if config.policy_data_path:
        # Loading the warm-start weights into the policy catches a checkpoint of another architecture now.
        spec = PolicySpec(
            class_path=resolve_class_path(config.policy_class_path),
            data_path=config.policy_data_path,
            init_kwargs={"hidden_size": config.hidden_size},
        )
        load_policy(spec, env_interface([get_mission(m) for m in config.missions]))


def _training_config(
    config: DAFSweepConfig, params: dict[str, Any], number: int, threads: int, workers: int
) -> DAFTrainingConfig:
    fields = {"torch_threads": threads, **config.resources(), **config.training, **params}
    fields.update(
        policy_class_path=config.policy_class_path,
        policy_data_path=config.policy_data_path,
        missions=list(config.missions),
        num_training_steps=config.training_steps_per_trial,
        run_id=f"{config.name}-trial-{number}",
        checkpoint_dir=str(sweep_dir(config) / "checkpoints"),
        seed=config.seed + number,
        progress=False,
        # Parallel workers share the GPU: together they stay within the configured fraction.
        gpu_memory_fraction=config.gpu_memory_fraction / workers,
    )
    return DAFTrainingConfig.from_dict(fields, source=f"trial {number} {params}")


# ---------------------------------------------------------------------------
# One trial
# ---------------------------------------------------------------------------


def _suggest(trial: optuna.Trial, space: dict[str, SearchDimension]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, dim in space.items():
        if not isinstance(dim, RangeSpec):
            params[name] = trial.suggest_categorical(name, dim)
        elif dim.is_int:
            params[name] = trial.suggest_int(name, int(dim.low), int(dim.high), step=int(dim.step), log=dim.log)
        else:
            params[name] = trial.suggest_float(name, dim.low, dim.high, step=dim.step, log=dim.log)
    return params


def _score(rewards: dict[str, list[float]], objective: str) -> float:
    pooled = [r for episode_rewards in rewards.values() for r in episode_rewards]
    return iqm(pooled) if objective == "iqm" else float(np.mean(pooled))


class _PruningHook:
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
        value = _score(rewards, self.config.objective)
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise StopTraining(f"pruned at {global_step} agent-steps (intermediate value {value:.3f})")


class _Objective:
    def __init__(self, config: DAFSweepConfig, space: dict[str, SearchDimension], threads: int, workers: int):
        self.config = config
        self.space = space
        self.threads = threads
        self.workers = workers

    def __call__(self, trial: optuna.Trial) -> float:
        params = _suggest(trial, self.space)
        # A re-run of an interrupted trial keeps its run number: same run id (resumes) and same seed.
        run_number = trial.user_attrs.get("run_number", trial.number)
        trial.set_user_attr("run_number", run_number)
        hook = _PruningHook(trial, self.config)
        started = time.perf_counter()
        try:
            tc = _training_config(self.config, params, run_number, self.threads, self.workers)
            trial.set_user_attr("run_dir", str(tc.checkpoint_root() / tc.run_id))
            return self._train_and_score(trial, tc, hook)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            # Optuna records the trial as FAIL (optimize catches Exception); the message stays with the trial.
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        except BaseException as exc:  # a stop signal (daf/interrupts.py): the trial runs again on resume
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("error", f"{describe_stop(exc)}; it runs again when the sweep is resumed")
            raise
        finally:
            trial.set_user_attr("duration_s", time.perf_counter() - started)
            trial.set_user_attr("agent_steps", max(hook.global_step, trial.user_attrs.get("agent_steps", 0)))

    def _train_and_score(self, trial: optuna.Trial, tc: DAFTrainingConfig, hook: _PruningHook) -> float:
        try:
            result = train(tc, on_update=hook)
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
        return _score(rewards, cfg.objective)


# ---------------------------------------------------------------------------
# Study, samplers, workers
# ---------------------------------------------------------------------------


def _storage(url: str) -> optuna.storages.RDBStorage:
    # SQLite's default 5 s busy timeout is too short when parallel workers write at the same moment.
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def _sampler(
    config: DAFSweepConfig, space: dict[str, SearchDimension], worker: int, session: int
) -> optuna.samplers.BaseSampler:
    if config.strategy == "grid":
        # Every worker and session must shuffle the grid alike: GridSampler maps trial numbers to grid points.
        return optuna.samplers.GridSampler(space, seed=config.seed)
    # A resumed session or another worker with the sweep's own seed would redraw the points already tried.
    seed = int(np.random.SeedSequence([config.seed, session, worker]).generate_state(1)[0])
    if config.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(config, cap=10))


def startup_trials(config: DAFSweepConfig, cap: int) -> int:
    """A third of the trials the sweep surely runs, 1 to `cap`: TPE's random start, the median's reference set."""
    # Optuna's defaults (10 random trials for TPE, 5 completed for the median pruner) would make a 10-trial sweep
    # plain random search that prunes nothing. Under a compute budget only the full trials it affords are sure:
    # with num_trials 24, 8 of the ~10 trials a 6-trial budget ran were random (sweep bench).
    trials = config.total_trials()
    if config.max_agent_steps is not None:
        trials = min(trials, config.max_agent_steps // config.training_steps_per_trial)
    return max(1, min(cap, trials // 3))


def _pruner(config: DAFSweepConfig) -> optuna.pruners.BasePruner:
    # No verdict before the warm-up (a quarter of the budget by default): early on every setting scores near
    # zero, and with finer intermediate evaluations the noise there pruned the sweep's best settings.
    if config.pruner == "median":
        # Judging against a single completed trial let one that was lucky early prune all eleven after it
        # (sweep bench, seed 3); a median over a few is robust to that.
        return optuna.pruners.MedianPruner(
            n_startup_trials=startup_trials(config, cap=5), n_warmup_steps=config.pruner_warmup()
        )
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=config.pruner_warmup(), max_resource=config.training_steps_per_trial
        )
    return optuna.pruners.NopPruner()


def _load_study(
    config: DAFSweepConfig, storage: optuna.storages.BaseStorage, sampler: optuna.samplers.BaseSampler | None = None
) -> optuna.Study:
    return optuna.create_study(
        study_name=config.name,
        storage=storage,
        sampler=sampler,
        pruner=_pruner(config),
        direction=config.optimize_direction,
        load_if_exists=True,
    )


def _check_fingerprint(study: optuna.Study, config: DAFSweepConfig) -> None:
    current = {k: v for k, v in config.model_dump(mode="json").items() if k in _FINGERPRINT}
    stored = study.user_attrs.get("daf_sweep")
    if stored is None:
        study.set_user_attr("daf_sweep", current)
        return
    changed = sorted(k for k in _FINGERPRINT if stored.get(k) != current.get(k))
    if changed:
        raise SweepError(
            f"sweep {config.name!r}: the stored study was run with other {changed}; continuing it would mix "
            "incomparable trials. Use another sweep name (or output_dir/storage), or restore the settings."
        )


def _requeue_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Queue a re-run, with the same parameters, of every interrupted trial: left RUNNING by a dead process (marked
    FAIL here), or stopped by a signal (marked by _Objective) and not re-run yet."""
    study_id = storage.get_study_id_from_name(study.study_name)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    requeued = []
    for t in trials:
        stopped = t.state == TrialState.FAIL and t.user_attrs.get("interrupted")
        if t.number in retried or not (t.state == TrialState.RUNNING or stopped):
            continue
        if t.state == TrialState.RUNNING:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            storage.set_trial_user_attr(trial_id, "error", "interrupted: the sweep process stopped during this trial")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        # As optuna.storages.RetryHeartbeatStaleTrialCallback does; system attrs keep GridSampler's grid id.
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=t.params,
                distributions=t.distributions,
                user_attrs={"run_number": t.user_attrs.get("run_number", t.number), "retry_of": t.number},
                system_attrs=t.system_attrs,
            )
        )
        requeued.append(t.number)
    return requeued


def _counts_as_finished(t: FrozenTrial) -> bool:
    return t.state.is_finished() and not t.user_attrs.get("interrupted")


class _Progress:
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


def _optimize(
    config: DAFSweepConfig,
    url: str,
    n_trials: int,
    worker: int,
    session: int,
    workers: int,
    progress: _Progress | None = None,
) -> None:
    """Run `n_trials` trials of the stored study; the body of every worker process."""
    space = validate_search_space(config.search_space)
    study = _load_study(config, _storage(url), _sampler(config, space, worker, session))
    threads = max(1, (os.cpu_count() or 1) // config.max_parallel_jobs)
    objective = _Objective(config, space, threads, workers)
    # One trial at a time: the compute budget is checked before each trial starts.
    for _ in range(n_trials):
        if _budget_left(config, study) < config.training_steps_per_trial:
            return
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[progress] if progress else None)


def _agent_steps_trained(study: optuna.Study) -> int:
    return sum(t.user_attrs.get("agent_steps") or 0 for t in study.get_trials(deepcopy=False) if t.state.is_finished())


def _budget_left(config: DAFSweepConfig, study: optuna.Study) -> float:
    """Agent-steps of `max_agent_steps` not yet trained by finished trials nor reserved by running ones."""
    if config.max_agent_steps is None:
        return float("inf")
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    return config.max_agent_steps - _agent_steps_trained(study) - running * config.training_steps_per_trial


def _run_trials(config: DAFSweepConfig, url: str, study: optuna.Study, n: int, progress: _Progress) -> None:
    session = len(study.trials)
    workers = min(config.max_parallel_jobs, n)
    if workers == 1:
        _optimize(config, url, n, 0, session, 1, progress)
        return
    shares = [n // workers + (i < n % workers) for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=raise_on_stop_signals) as pool:
        futures = [pool.submit(_optimize, config, url, k, i, session, workers) for i, k in enumerate(shares)]
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


# ---------------------------------------------------------------------------
# Entry point and results
# ---------------------------------------------------------------------------


def run_sweep(config: DAFSweepConfig, progress: ProgressFn | None = None) -> SweepResult:
    """Run (or continue) the sweep: train and evaluate every trial, then report the best configuration."""
    validate_sweep(config)
    url = storage_url(config)
    directory = sweep_dir(config)
    with directory_lock(directory, f"sweep {directory.name!r}", SweepError):
        storage = _storage(url)
        study = _load_study(config, storage)
        _check_fingerprint(study, config)
        _requeue_interrupted(study, storage)
        total = config.total_trials()
        remaining = total - sum(_counts_as_finished(t) for t in study.get_trials(deepcopy=False))
        reporter = _Progress(progress, study, total)
        if remaining > 0:
            _run_trials(config, url, study, remaining, reporter)
            return _collect(config, url, study)
        done = (
            f"study {config.name!r} in {url} already has {total - remaining} of {total} trials finished: no trial "
            "ran; raise num_trials (or max_agent_steps) to continue it, or give the sweep another name"
        )
        return _collect(config, url, study, [done])


def _trial_record(t: FrozenTrial) -> dict[str, Any]:
    record = {
        "number": t.number,
        "params": t.params,
        # Optuna gives a pruned trial its last intermediate value; only a completed trial has a score.
        "value": t.value if t.state == TrialState.COMPLETE else None,
        "state": t.state.name,
        "intermediate_values": dict(t.intermediate_values),
    }
    record.update({key: t.user_attrs.get(key) for key in _TRIAL_ATTRS})
    record["error"] = record["error"] or t.system_attrs.get("fail_reason")
    return record


def _collect(config: DAFSweepConfig, url: str, study: optuna.Study, notes: list[str] | None = None) -> SweepResult:
    trials = study.get_trials(deepcopy=False)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        problems = "; ".join(f"trial {t.number} {t.state.name}: {_trial_record(t)['error']}" for t in trials)
        raise SweepError(f"sweep {config.name!r}: no trial completed ({problems or 'no trials ran'})")
    best = study.best_trial
    best_config = BestConfig(
        hyperparameters=dict(best.params),
        score=float(best.value),
        trial_number=best.number,
        checkpoint=best.user_attrs["checkpoint"],
    )
    out = sweep_dir(config)
    plots, plot_notes = _plots(study, out)
    notes = [*(notes or []), *plot_notes]
    finished = sum(_counts_as_finished(t) for t in trials)
    if config.max_agent_steps is not None and finished < config.total_trials():
        notes.append(
            f"stopped on the compute budget: {finished} of {config.total_trials()} trials ran, "
            f"{_agent_steps_trained(study):,} of max_agent_steps {config.max_agent_steps:,} agent-steps trained"
        )
    result = SweepResult(
        study_name=config.name,
        storage=url,
        output_dir=str(out),
        trials=[_trial_record(t) for t in trials],
        best_config=best_config,
        best_checkpoint=best_config.checkpoint,
        results_path=str(out / "sweep_results.json"),
        plots=plots,
        notes=notes,
    )
    atomic_write_text(result.results_path, json.dumps(result.to_dict(), indent=2))
    return result


def _importances_note(study: optuna.Study) -> str | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return "param_importances skipped: needs at least 2 completed trials"
    if not any(len({repr(t.params.get(name)) for t in complete}) > 1 for name in complete[0].params):
        return "param_importances skipped: no parameter took more than one value among completed trials"
    return None


def _plots(study: optuna.Study, out: Path) -> tuple[dict[str, str], list[str]]:
    makers = {
        "optimization_history": optuna_plots.plot_optimization_history,
        "parallel_coordinates": optuna_plots.plot_parallel_coordinate,
        "param_importances": optuna_plots.plot_param_importances,
    }
    notes = []
    note = _importances_note(study)
    if note:
        notes.append(note)
        del makers["param_importances"]
    plots = {}
    for name, make in makers.items():
        with warnings.catch_warnings():
            # Optuna marks these plots experimental and matplotlib warns on single-valued axes: noise here.
            warnings.simplefilter("ignore")
            try:
                ax = make(study)
            except Exception as exc:  # a plot is a convenience: its failure must not lose the sweep's results
                notes.append(f"{name} skipped: {type(exc).__name__}: {exc}")
                continue
        figure = np.ravel(ax)[0].figure
        path = out / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        plots[name] = str(path)
    return plots, notes
