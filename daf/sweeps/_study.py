"""The stored Optuna study: where a sweep keeps it, opening it, checking that a continued study is the same sweep,
re-queuing the trials a stopped run left unfinished, and what its finished trials trained (the compute budget)."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from daf.config import DAFSweepConfig, Role, fields_with
from daf.sweeps._errors import SweepError
from daf.sweeps._search import pruner

# Settings that define what a trial's value means: continuing a study under other ones would mix results.
FINGERPRINT = fields_with(DAFSweepConfig, Role.FINGERPRINT)


def sweep_dir(config: DAFSweepConfig) -> Path:
    """The sweep's directory: its study database (by default), trial runs, results and plots."""
    return Path(config.output_dir) / "sweeps" / config.name


def storage_url(config: DAFSweepConfig) -> str:
    """The study's storage: `config.storage`, or SQLite in the sweep's directory."""
    return config.storage or f"sqlite:///{(sweep_dir(config) / 'study.db').resolve()}"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    # SQLite's default 5 s busy timeout is too short when parallel workers write at the same moment.
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def load_study(
    config: DAFSweepConfig, storage: optuna.storages.BaseStorage, sampler: optuna.samplers.BaseSampler | None = None
) -> optuna.Study:
    """The sweep's study, created on first use."""
    return optuna.create_study(
        study_name=config.name,
        storage=storage,
        sampler=sampler,
        pruner=pruner(config),
        direction=config.optimize_direction,
        load_if_exists=True,
    )


def check_fingerprint(study: optuna.Study, config: DAFSweepConfig) -> None:
    """Record the FINGERPRINT settings in a new study; raise SweepError if a stored study has other ones."""
    current = {k: v for k, v in config.model_dump(mode="json").items() if k in FINGERPRINT}
    stored = study.user_attrs.get("daf_sweep")
    if stored is None:
        study.set_user_attr("daf_sweep", current)
        return
    changed = sorted(k for k in FINGERPRINT if stored.get(k) != current.get(k))
    if changed:
        raise SweepError(
            f"sweep {config.name!r}: the stored study was run with other {changed}; continuing it would mix "
            "incomparable trials. Use another sweep name (or output_dir/storage), or restore the settings."
        )


def requeue_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Queue a re-run, with the same parameters, of every interrupted trial: left RUNNING by a dead process (marked
    FAIL here), or stopped by a signal (marked by the trial objective) and not re-run yet."""
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


def counts_as_finished(t: FrozenTrial) -> bool:
    """Finished and not interrupted: an interrupted trial runs again, so it does not count towards the trials."""
    return t.state.is_finished() and not t.user_attrs.get("interrupted")


def agent_steps_trained(study: optuna.Study) -> int:
    return sum(t.user_attrs.get("agent_steps") or 0 for t in study.get_trials(deepcopy=False) if t.state.is_finished())


def budget_left(config: DAFSweepConfig, study: optuna.Study) -> float:
    """Agent-steps of `max_agent_steps` not yet trained by finished trials nor reserved by running ones."""
    if config.max_agent_steps is None:
        return float("inf")
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    return config.max_agent_steps - agent_steps_trained(study) - running * config.training_steps_per_trial
