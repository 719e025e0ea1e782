"""The stored Optuna study: where a sweep keeps it, opening it, checking that a continued study is the same sweep,
noticing trials whose process died and queuing them again, and what its trials trained (the compute budget)."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from daf.config import DAFSweepConfig, Role, fields_with
from daf.sweeps._errors import SweepError
from daf.sweeps._locking import study_lock
from daf.sweeps._search import pruner

# Settings that define what a trial's value means: continuing a study under other ones would mix results.
FINGERPRINT = fields_with(DAFSweepConfig, Role.FINGERPRINT)


def sweep_dir(config: DAFSweepConfig) -> Path:
    """The sweep's directory: its study database (by default), trial runs, results and plots."""
    return Path(config.output_dir) / "sweeps" / config.name


def storage_url(config: DAFSweepConfig) -> str:
    """The study's storage: `config.storage`, or SQLite in the sweep's directory."""
    return config.storage or f"sqlite:///{(sweep_dir(config) / 'study.db').resolve()}"


# Liveness of trials that run anywhere (another process, a Dask worker on another machine): each running trial
# records a heartbeat every HEARTBEAT_S in the study's storage; one without a heartbeat for GRACE_S is failed and
# queued again (retry_interrupted), whichever sweep run notices first.
HEARTBEAT_S = 5
GRACE_S = 30
MAX_RERUNS = 3


# Optuna's RDB schema (optuna/storages/_rdb/models.py, and alembic's version table). Listed here rather than read
# from Optuna's private models module: a new Optuna table makes a sweep refuse its own old database, loudly, until
# it is added.
OPTUNA_TABLES = frozenset({
    "studies", "study_directions", "study_system_attributes", "study_user_attributes", "trial_heartbeats",
    "trial_intermediate_values", "trial_params", "trial_system_attributes", "trial_user_attributes", "trial_values",
    "trials", "version_info", "alembic_version",
})  # fmt: skip


def foreign_storage_problem(url: str) -> str | None:
    """Why the database at `url` is not a sweep's to write (Optuna creates its tables in whatever database it is
    given: an application's, or Prefect's own); None when it is new, empty or an Optuna study database."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        return f"storage {url!r} is not a SQLAlchemy URL: {exc}"
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:" or not Path(database).exists():
            return None
        if not Path(database).is_file():
            return f"storage {url!r}: {database} is not a file"
        try:  # read-only, and never created: sqlite3 would make an empty database of a missing path
            with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
                tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            return f"storage {url!r}: {database} is not a SQLite database ({exc})"
    else:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            tables = set(sqlalchemy.inspect(engine).get_table_names())
        except sqlalchemy.exc.SQLAlchemyError as exc:
            return f"storage {url!r} cannot be reached: {str(exc).splitlines()[0]}"
        finally:
            engine.dispose()
    foreign = sorted(tables - OPTUNA_TABLES)
    if foreign:
        return (
            f"storage {url!r} holds tables that are not an Optuna study's ({', '.join(foreign[:8])}"
            f"{', ...' if len(foreign) > 8 else ''}): a sweep writes its tables into the database it names; give it "
            "a database of its own"
        )
    return None


def open_storage(url: str) -> optuna.storages.RDBStorage:
    # SQLite's default 5 s busy timeout is too short when parallel workers write at the same moment.
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    # Under a lock: sweep runs that open a new database at the same moment would race to create Optuna's tables
    # (on PostgreSQL one of them fails with a duplicate-key error).
    with (
        study_lock(url, "optuna-schema"),
        warnings.catch_warnings(),
    ):  # heartbeats are experimental in Optuna: the warning says nothing here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=_retry_stale,
        )


def load_study(
    config: DAFSweepConfig, storage: optuna.storages.BaseStorage, sampler: optuna.samplers.BaseSampler | None = None
) -> optuna.Study:
    """The sweep's study, created on first use (loaded quietly: every trial and every ask opens it)."""
    try:
        return optuna.load_study(study_name=config.name, storage=storage, sampler=sampler, pruner=pruner(config))
    except KeyError:  # a new sweep; load_if_exists covers another run creating it at the same moment
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


def retry_interrupted(study: optuna.Study, trial: FrozenTrial, reason: str, automatic: bool = True) -> int | None:
    """Record that `trial` (FAIL already, or failed here if it is still RUNNING) was interrupted, and queue a re-run
    with the same parameters and run number (same run directory and seed: its training resumes from its last
    checkpoint). Returns the trial's number, or None when another sweep run had already done it. An `automatic`
    re-run (its process died, not a stop signal) is given up after MAX_RERUNS: the trial then stays FAIL and counts
    as finished, so a trial that keeps killing its process cannot hold up the sweep forever."""
    storage = study._storage
    trial_id = trial._trial_id
    if any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(deepcopy=False)):
        return None
    reruns = trial.user_attrs.get("reruns", 0) + automatic
    if reruns > MAX_RERUNS:
        storage.set_trial_user_attr(trial_id, "error", f"{reason}; given up after {MAX_RERUNS} re-runs")
        if trial.state == TrialState.RUNNING:
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        return None
    storage.set_trial_user_attr(trial_id, "interrupted", True)
    storage.set_trial_user_attr(trial_id, "error", reason)
    if trial.state == TrialState.RUNNING:
        try:
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # it finished meanwhile: nothing to re-run
            return None
    # As optuna.storages.RetryHeartbeatStaleTrialCallback does; system attrs keep GridSampler's grid id.
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={
                "run_number": trial.user_attrs.get("run_number", trial.number),
                "retry_of": trial.number,
                "reruns": reruns,
            },
            system_attrs=trial.system_attrs,
        )
    )
    return trial.number


def _retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's callback for a trial whose heartbeat stopped (its process or machine died)."""
    worker = trial.user_attrs.get("worker", "its worker")
    retry_interrupted(study, trial, f"interrupted: no heartbeat from {worker} for {GRACE_S} s")


def worker_identity() -> dict[str, str]:
    """The user attrs that say which process trains a trial: `worker` (host:pid, for people) and `worker_space`
    (this boot of this machine and this PID namespace: a container with the host's name has other pids)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        space = f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:  # not Linux: no way to tell pids apart, so no trial is judged dead by its pid
        space = ""
    return {"worker": f"{socket.gethostname()}:{os.getpid()}", "worker_space": space}


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Queue again the running trials whose process is dead: at once for a process of this machine (and PID
    namespace) that no longer exists, after GRACE_S without a heartbeat for any other
    (optuna.storages.fail_stale_trials). Call it under the study's lock (daf.sweeps._locking)."""
    retried = []
    here = worker_identity()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        local = here["worker_space"] and t.user_attrs.get("worker_space") == here["worker_space"]
        if local and host == here["worker"].rpartition(":")[0] and pid.isdigit() and not _alive(int(pid)):
            number = retry_interrupted(study, t, f"interrupted: its process {pid} on {host} died during this trial")
            if number is not None:
                retried.append(number)
    with warnings.catch_warnings():  # experimental in Optuna since 2.9: the warning says nothing here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return retried


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


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
