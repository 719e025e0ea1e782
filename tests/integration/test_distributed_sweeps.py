"""Sweeps past one machine, against real services on 127.0.0.1: the session's Prefect server (on PostgreSQL), a Dask
scheduler with two single-threaded workers, and the Optuna study in a fresh PostgreSQL database per test. Nothing is
mocked: every trial trains (mlp on training_facility_1, a few thousand agent-steps) and is evaluated.

- A 4-point grid on 2 Dask workers: every trial is a Prefect task run (`sweep <name> trial <n>`) executed as a Dask
  task (prefix `trial_task`), and both workers trained trials.
- The same sweep with the Dask worker process training a trial SIGKILLed mid-trial: the sweep still completes the
  4 grid points (the trial re-run by Dask, or failed as stale and retried by Optuna).
- Two sweep flow runs (two processes) started at once on one study: together they cover the grid exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import stack
from optuna.trial import FrozenTrial, TrialState

GRID = {"learning_rate": [0.001, 0.0003], "ent_coef": [0.01, 0.001]}
GRID_POINTS = {(lr, ent) for lr in GRID["learning_rate"] for ent in GRID["ent_coef"]}


# ------------------------------------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def sweep_config(out: Path, name: str, storage: str, **overrides):
    from daf.config import DAFSweepConfig

    return DAFSweepConfig.from_dict(
        {
            "name": name,
            "output_dir": str(out),
            "policy_class_path": "mlp",
            "missions": ["training_facility_1"],
            "strategy": "grid",
            "search_space": GRID,
            "num_trials": 4,
            "training_steps_per_trial": 8192,
            "episodes_per_trial": 2,
            "pruner": "none",
            "device": "cpu",
            "seed": 0,
            "storage": storage,
            # Two update epochs, not the default 8: these tests check where trials run, not how well they learn.
            "training": {"num_envs": 4, "update_epochs": 2},
            **overrides,
        }
    )


def point(params: dict) -> tuple[float, float]:
    return (params["learning_rate"], params["ent_coef"])


def worker_of(trial: FrozenTrial) -> tuple[str, int]:
    """The (hostname, pid) of the process that trained the trial, from its `worker` user attr."""
    attr = trial.user_attrs.get("worker")
    assert isinstance(attr, str) and ":" in attr, f"trial {trial.number} has no worker attr 'host:pid': {attr!r}"
    host, pid = attr.rsplit(":", 1)
    return host, int(pid)


def study_trials(name: str, storage: str) -> list[FrozenTrial]:
    return sorted(optuna.load_study(study_name=name, storage=storage).trials, key=lambda t: t.number)


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the trials some other trial retries: Optuna's RetryHeartbeatStaleTrialCallback records them in
    the retry's system attrs (`failed_trial`, `retry_history`), DAF's re-queue of an interrupted trial in its
    `retry_of` user attr."""
    numbers: set[int] = set()
    for t in trials:
        # What RetryHeartbeatStaleTrialCallback.retry_history / retried_trial_number read (experimental API).
        numbers.update(t.system_attrs.get("retry_history", []))
        if t.system_attrs.get("failed_trial") is not None:
            numbers.add(t.system_attrs["failed_trial"])
        if t.user_attrs.get("retry_of") is not None:
            numbers.add(t.user_attrs["retry_of"])
    return numbers


def describe(trials: list[FrozenTrial]) -> str:
    return "\n".join(
        f"  {t.number} {t.state.name} {t.params} worker={t.user_attrs.get('worker')} "
        f"error={t.user_attrs.get('error') or t.system_attrs.get('fail_reason')}"
        for t in trials
    )


def field(obj, name: str):
    """A field of an output that is a dataclass in process and a dict once serialized."""
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


@contextmanager
def on_server(server: stack.PrefectServer) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


def run_sweep_pipeline(server: stack.PrefectServer, cfg):
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    from daf.orchestrators import daf_run_sweep_pipeline

    with on_server(server):
        result = daf_run_sweep_pipeline(config=cfg, parallel_stages=True)
        # Send what Prefect's client still holds (logs, task-run events) while the session's server is surely up.
        APILogWorker.drain_all(timeout=60)
        EventsWorker.drain_all(timeout=60)
    return result


def trial_task_runs(server: stack.PrefectServer, name: str, expected: set[int], timeout: float = 60) -> dict:
    """{task-run name: final state name} of the sweep's trial task runs, once those of `expected` trial numbers are
    all final (the server records task-run states from events, shortly after the flow run returns)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    prefix = f"sweep {name} trial "
    wanted = {f"{prefix}{n}" for n in expected}

    def read() -> dict | None:
        with on_server(server), get_client(sync_client=True) as client:
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=prefix)))
        names = {r.name: r.state for r in runs if r.name.startswith(prefix)}
        if wanted <= names.keys() and all(names[n] is not None and names[n].is_final() for n in wanted):
            return {n: s.name if s is not None else None for n, s in names.items()}
        return None

    try:
        return stack.wait_for(read, timeout, f"the trial task runs of sweep {name} to be final", interval=1.0)
    except AssertionError:
        with on_server(server), get_client(sync_client=True) as client:
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=prefix)))
        raise AssertionError(
            f"expected final task runs {sorted(wanted)}; the server has {[(r.name, r.state_name) for r in runs]}"
        ) from None


def assert_success(result) -> None:
    assert result.status == "success", f"{result.status}: {result.errors}"
    assert result.errors == []


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def study_db(postgres: stack.Postgres) -> str:
    """A fresh PostgreSQL database for this test's Optuna study (psycopg URL)."""
    return postgres.create_database(unique("study"))


@pytest.fixture
def dask_cluster(
    server: stack.PrefectServer, stack_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, dict[str, int]]]:
    """A Dask scheduler and 2 single-threaded workers (their task runs report to the session's Prefect server);
    yields (address, {worker address: pid of the worker process}) as they were at the start."""
    from distributed import Client

    address, services = stack.start_dask(stack_dir / unique("dask"), server.env, workers=2)
    monkeypatch.setenv("DAF_DASK_ADDRESSES", address)  # this process runs the sweeps: it names its scheduler
    try:
        with Client(address, timeout=10) as client:
            pids = client.run(os.getpid)
        assert len(set(pids.values())) == 2, pids
        yield address, pids
    finally:
        for service in services:
            service.stop()


# --------------------------------------------------------------------------------------------------------- tests


def test_grid_sweep_runs_its_trials_as_prefect_task_runs_on_both_dask_workers(
    server, dask_cluster, study_db, stack_dir
):
    from distributed import Client

    address, pids = dask_cluster
    name = unique("grid")
    cfg = sweep_config(
        stack_dir / unique("out"), name, study_db, task_runner="dask", dask_address=address, max_parallel_jobs=2
    )
    result = run_sweep_pipeline(server, cfg)

    assert_success(result)
    records = sorted(result.outputs["trials"], key=lambda t: t["number"])
    assert [t["number"] for t in records] == [0, 1, 2, 3], records
    assert [t["state"] for t in records] == ["COMPLETE"] * 4, records
    assert {point(t["params"]) for t in records} == GRID_POINTS
    best = result.outputs["best_config"]
    best_record = max(records, key=lambda t: t["value"])
    assert field(best, "hyperparameters") == best_record["params"]

    # The study in PostgreSQL: 4 completed trials, trained by the two Dask worker processes (not the flow's).
    trials = study_trials(name, study_db)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, describe(trials)
    assert {point(t.params) for t in trials} == GRID_POINTS
    workers = {worker_of(t) for t in trials}
    assert {host for host, _ in workers} == {socket.gethostname()}, workers
    assert {pid for _, pid in workers} == set(pids.values()), (workers, pids)

    # Dask: every trial was one `trial_task` task, and both workers executed some.
    with Client(address, timeout=10) as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        prefixes = client.run_on_scheduler(
            lambda dask_scheduler: {p: dict(tp.state_counts) for p, tp in dask_scheduler.task_prefixes.items()}
        )
    assert "trial_task" in prefixes, prefixes
    assert prefixes["trial_task"].get("memory") == 4, prefixes
    assert prefixes["trial_task"].get("erred", 0) == 0, prefixes
    assert len(executed) == 2 and all(n > 0 for n in executed.values()), executed

    # Prefect: one Completed task run per trial, named after the sweep and the trial number.
    runs = trial_task_runs(server, name, {0, 1, 2, 3})
    assert runs == {f"sweep {name} trial {n}": "Completed" for n in range(4)}, runs


class MidTrialKiller(threading.Thread):
    """Polls the study until a trial RUNNING on a Dask worker has written a checkpoint (or, without a `run_dir`
    attr, is RUNNING at all), then SIGKILLs the process named in its `worker` attr. Only ever kills one of
    `allowed_pids` (the Dask worker processes): never the test's own process."""

    def __init__(self, storage_url: str, name: str, allowed_pids: set[int], timeout: float = 240):
        super().__init__(daemon=True)
        # The schema is created here, before the pipeline starts, so that no two processes create it at once.
        self.storage = optuna.storages.RDBStorage(storage_url)
        self.name = name
        self.allowed = allowed_pids
        self.timeout = timeout
        self.stop = threading.Event()
        self.killed: dict | None = None
        self.problem: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                study_id = self.storage.get_study_id_from_name(self.name)
            except KeyError:
                time.sleep(0.2)
                continue
            for t in self.storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                attr = t.user_attrs.get("worker")
                if not attr:
                    continue
                host, pid = attr.rsplit(":", 1)
                if host != socket.gethostname() or int(pid) not in self.allowed:
                    self.problem = f"trial {t.number} runs in {attr}, not in a Dask worker process {self.allowed}"
                    return
                step = self.checkpoint_step(t)
                if t.user_attrs.get("run_dir") and step is None:
                    continue  # not yet mid-training: wait for its first checkpoint
                os.kill(int(pid), signal.SIGKILL)
                self.killed = {"number": t.number, "params": dict(t.params), "worker": attr, "checkpoint_step": step}
                return
            time.sleep(0.1)
        if not self.stop.is_set():
            self.problem = f"no trial was seen RUNNING on a Dask worker with a checkpoint within {self.timeout} s"

    @staticmethod
    def checkpoint_step(t: FrozenTrial) -> int | None:
        run_dir = t.user_attrs.get("run_dir")
        if not run_dir:
            return None
        steps = sorted(int(p.name.removeprefix("step_")) for p in (Path(run_dir) / "checkpoints").glob("step_*"))
        return steps[-1] if steps else None


def test_sweep_completes_all_grid_points_when_a_dask_worker_is_killed_mid_trial(
    server, dask_cluster, study_db, stack_dir
):
    address, pids = dask_cluster
    name = unique("kill")
    # Trials long enough (and checkpointed often enough) to be caught mid-training.
    cfg = sweep_config(
        stack_dir / unique("out"),
        name,
        study_db,
        task_runner="dask",
        dask_address=address,
        max_parallel_jobs=2,
        training_steps_per_trial=16_384,
        training={"num_envs": 4, "update_epochs": 2, "checkpoint_interval": 4096},
    )
    killer = MidTrialKiller(study_db, name, set(pids.values()))
    killer.start()
    try:
        result = run_sweep_pipeline(server, cfg)
    finally:
        killer.stop.set()
        killer.join(timeout=10)

    assert killer.problem is None, killer.problem
    assert killer.killed is not None, "the pipeline finished before a trial could be killed"
    killed = killer.killed
    trials = study_trials(name, study_db)
    print(f"killed: {killed}\ntrials:\n{describe(trials)}")  # shown when the test fails (or with -s)
    assert_success(result)

    # Exactly the 4 grid points completed; anything else is a failed trial that was retried, nothing left over.
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4, describe(trials)
    assert {point(t.params) for t in complete} == GRID_POINTS, describe(trials)
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.FAIL}, describe(trials)
    retried = retried_numbers(trials)
    unretried = [t.number for t in trials if t.state == TrialState.FAIL and t.number not in retried]
    assert unretried == [], f"failed trials without a retry: {unretried}\n{describe(trials)}"

    # The killed grid point was finished by another process, resuming the killed run's checkpoint.
    (redone,) = [t for t in complete if t.params == killed["params"]]
    assert redone.user_attrs.get("worker") != killed["worker"], (killed, describe(trials))
    if redone.number != killed["number"]:  # retried by Optuna as a new trial: the killed one is FAIL
        assert trials[killed["number"]].state == TrialState.FAIL, describe(trials)
        assert killed["number"] in retried, describe(trials)
    if killed["checkpoint_step"] is not None:
        resumed = redone.user_attrs.get("resumed_from_step")
        assert resumed is not None and resumed >= killed["checkpoint_step"], (killed, redone.user_attrs)

    records = result.outputs["trials"]
    assert sorted(t["number"] for t in records if t["state"] == "COMPLETE") == [t.number for t in complete]
    # Every completed trial has its Completed Prefect task run.
    runs = trial_task_runs(server, name, {t.number for t in complete})
    for t in complete:
        assert runs[f"sweep {name} trial {t.number}"] == "Completed", runs


# A sweep pipeline in its own process: imports everything, says it is ready, waits for the start signal, runs.
_PIPELINE_PROCESS = """
import sys, time
from pathlib import Path

from daf.config import DAFSweepConfig
from daf.orchestrators import daf_run_sweep_pipeline
import daf.sweeps, daf.training  # noqa: F401  (loaded before the start, so both processes start together)

config_path, ready, go, out = sys.argv[1:]
cfg = DAFSweepConfig.from_dict(__import__("json").loads(Path(config_path).read_text()))
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.01)
result = daf_run_sweep_pipeline(config=cfg, parallel_stages=True)
Path(out).write_text(result.to_json())
"""


@pytest.mark.parametrize("database", ["fresh", "with_optuna_schema"])
def test_two_sweep_flow_runs_started_at_once_share_the_study_and_cover_the_grid_once(
    server, study_db, stack_dir, database
):
    # "fresh": the runs also meet on an empty database, where both create Optuna's tables at once;
    # "with_optuna_schema": the tables exist (as after any earlier sweep), only the study is new.
    if database == "with_optuna_schema":
        optuna.storages.RDBStorage(study_db)
    name = unique("shared")
    work = stack_dir / unique("two-runs")
    work.mkdir()
    # One sweep config for both runs (same study name, storage and output dir): thread runner, one trial at a time
    # per run; trials long enough that both runs are training at once.
    cfg = sweep_config(work / "out", name, study_db, max_parallel_jobs=1, training_steps_per_trial=16_384)
    config_path = work / "sweep.json"
    config_path.write_text(json.dumps(cfg.model_dump(mode="json", exclude_unset=True)))
    go = work / "go"
    procs: list[subprocess.Popen] = []
    try:
        for i in range(2):
            with (work / f"run-{i}.log").open("w") as log:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-c",
                            _PIPELINE_PROCESS,
                            str(config_path),
                            str(work / f"ready-{i}"),
                            str(go),
                            str(work / f"result-{i}.json"),
                        ],
                        cwd=stack.REPO,
                        env=server.env | {"PYTHONUNBUFFERED": "1"},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

        def ready() -> bool:
            for i, proc in enumerate(procs):
                assert proc.poll() is None, (work / f"run-{i}.log").read_text()[-4000:]
            return all((work / f"ready-{i}").exists() for i in range(2))

        stack.wait_for(ready, 120, "both sweep processes to start", interval=0.2)
        go.touch()
        for i, proc in enumerate(procs):
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"run {i} did not finish:\n{(work / f'run-{i}.log').read_text()[-4000:]}"
                ) from None
            assert proc.returncode == 0, (work / f"run-{i}.log").read_text()[-4000:]
    finally:
        for proc in procs:
            stack.stop_group(proc)

    from daf.results import PipelineResult

    results = [PipelineResult.from_json((work / f"result-{i}.json").read_text()) for i in range(2)]
    for i, result in enumerate(results):
        assert result.status == "success", f"run {i}: {result.errors}\n{(work / f'run-{i}.log').read_text()[-4000:]}"

    # Together: exactly the 4 grid points, each trained once; no failed, duplicate or left-over trial.
    trials = study_trials(name, study_db)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, describe(trials)
    assert sorted(point(t.params) for t in trials) == sorted(GRID_POINTS), describe(trials)
    # Both runs trained: the trials' `worker` pids are the two pipeline processes.
    assert {worker_of(t) for t in trials} == {(socket.gethostname(), p.pid) for p in procs}, describe(trials)
    # The runs' results together list every trial, as completed.
    listed = {t["number"] for result in results for t in result.outputs["trials"] if t["state"] == "COMPLETE"}
    assert listed == {0, 1, 2, 3}, [r.outputs["trials"] for r in results]
