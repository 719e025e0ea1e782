"""SIGTERM and SIGINT stop real `daf` processes cleanly: exit 143/130, the result written naming the signal, what
was done kept (checkpoint, study), and nothing left running (the embedded Prefect server included), checked by PID.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from mettagrid.policy.policy import PolicySpec

from daf.config import DAFTrainingConfig
from daf.evaluation import evaluate
from daf.interrupts import (
    Interrupted,
    descendants,
    raise_if_stop_requested,
    stop_at_safe_points,
    stop_on_signals,
    stop_requested,
)
from daf.training import train

DAF = Path(sys.executable).parent / "daf"


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_daf_left_running():
    """A test that fails mid-way must not leave its `daf` (a training at full CPU, env workers that later tests
    would count as theirs) running through the rest of the suite: its whole session is killed."""
    yield
    while _started:
        proc = _started.pop()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def prefect_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


@pytest.fixture(scope="module")
def migrated_home(tmp_path_factory) -> Path:
    """A PREFECT_HOME whose SQLite database is already migrated. Each `daf` below starts on its own copy, as a
    user's every run after the first does: its embedded server is up in ~12 s instead of ~20 s. (A first run on an
    empty PREFECT_HOME is tests/pipelines/test_cli.py's subprocess test.)"""
    home = tmp_path_factory.mktemp("migrated-prefect-home")
    cmd = [str(DAF.parent / "prefect"), "server", "database", "upgrade", "-y"]
    subprocess.run(cmd, env=prefect_env(home), check=True, capture_output=True, timeout=180)
    return home


class Run:
    """A `daf` command in its own session, on a copy of `home`, its stderr lines collected as they come."""

    def __init__(self, args: list[str], home: Path, tmp_path: Path):
        own_home = shutil.copytree(home, tempfile.mkdtemp(prefix="prefect-home-", dir=tmp_path), dirs_exist_ok=True)
        env = prefect_env(own_home)
        self.proc = subprocess.Popen(
            [str(DAF), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True,
        )  # fmt: skip
        _started.append(self.proc)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for_line(self, fragment: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                assert self.proc.poll() is None, f"daf exited {self.proc.returncode}:\n{''.join(self.seen)}"
                continue
            self.seen.append(line)
            if fragment in line:
                return
        raise AssertionError(f"no line with {fragment!r} in {timeout} s:\n{''.join(self.seen)}")

    def stop(self, signum: int, times: int = 1, group: bool = False) -> tuple[int, list[int], str]:
        """Send the signal (to the whole process group, as a terminal's Ctrl-C does, when `group`); (exit code, the
        descendants it had then, stdout)."""
        children = descendants(self.proc.pid)
        assert children, "the daf process should have started its embedded Prefect server"
        for _ in range(times):
            if group:
                os.killpg(self.proc.pid, signum)  # the daf process leads its own session: its group's id is its pid
            else:
                os.kill(self.proc.pid, signum)
            time.sleep(0.3)
        try:
            out, _ = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            while not self.lines.empty():
                self.seen.append(self.lines.get())
            tail = "".join(self.seen)[-4000:]
            raise AssertionError(f"daf still running 120 s after {signal.Signals(signum).name}:\n{tail}") from None
        return self.proc.returncode, children, out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its exit status is left to collect


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def result_of(out_dir: Path) -> dict:
    (path,) = out_dir.glob("runs/*/pipeline_result.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("env_workers", [0, 2])
def test_sigterm_stops_training_keeps_its_checkpoint_and_leaves_nothing_running(tmp_path, migrated_home, env_workers):
    out = tmp_path / "out"
    run = Run(["train", "--policy", "mlp", "--mission", "training_facility_1", "--steps", "5000000",
               "--run-id", "stopped", "--output-dir", str(out), "--set", "checkpoint_interval=4096",
               "--set", "num_envs=4", "--set", f"num_env_workers={env_workers}"], migrated_home, tmp_path)  # fmt: skip
    deadline = time.monotonic() + 180
    while not list((out / "checkpoints" / "stopped" / "checkpoints").glob("step_*")):  # mid-run, one checkpoint kept
        assert run.proc.poll() is None and time.monotonic() < deadline, "training did not reach a checkpoint"
        time.sleep(0.2)
    workers = [pid for pid in descendants(run.proc.pid) if b"daf.vecenv._worker" in _cmdline(pid)]
    assert len(workers) == env_workers
    code, children, stdout = run.stop(signal.SIGTERM)

    assert code == 143, stdout
    assert not [pid for pid in children if alive(pid)], "processes left behind"
    result = result_of(out)
    assert result["status"] == "failed" and result["outputs"]["interrupted_by"] == "SIGTERM"
    (error,) = result["errors"]
    assert error.startswith("training: interrupted by SIGTERM: training run 'stopped' keeps its last complete")
    kept = sorted((out / "checkpoints" / "stopped" / "checkpoints").glob("step_*"))
    assert kept and (kept[-1] / "policy.pt").is_file()
    assert f"step {int(kept[-1].name.split('_')[1])}" in error  # the checkpoint it names is the one on disk


def test_sigint_stops_a_comparison_and_a_second_one_stops_at_once(tmp_path, migrated_home):
    out = tmp_path / "out"
    args = ["compare", "-p", "baseline", "-p", "random", "-m", "training_facility_1", "-n", "4000",
            "--output-dir", str(out)]  # fmt: skip
    run = Run(args, migrated_home, tmp_path)
    again = Run([*args[:-1], str(tmp_path / "again")], migrated_home, tmp_path)  # both start their servers at once
    run.wait_for_line("Prefect flow run", timeout=180)
    time.sleep(2.0)
    code, children, stdout = run.stop(signal.SIGINT)
    assert code == 130, stdout
    assert not [pid for pid in children if alive(pid)], "processes left behind"
    result = result_of(out)
    assert result["outputs"]["interrupted_by"] == "SIGINT"
    assert result["errors"] == ["policy_comparison: interrupted by SIGINT"]

    again.wait_for_line("Prefect flow run", timeout=180)
    time.sleep(2.0)
    started = time.monotonic()
    code, children, _ = again.stop(signal.SIGINT, times=2)
    # Exit 130, or killed by SIGINT itself when the second signal lands during interpreter shutdown, after the
    # exit handlers: a shell reports both as 130.
    assert code in (130, -signal.SIGINT) and time.monotonic() - started < 10
    assert not [pid for pid in children if alive(pid)], "a second SIGINT still reaps the children"


def test_ctrl_c_in_a_terminal_stops_a_comparison_like_a_signal_to_its_pid(tmp_path, migrated_home):
    """A terminal's Ctrl-C signals the whole foreground group; the embedded server is outside it, so daf stops as
    for a signal to its pid alone (it had retried the dead server for minutes, then exited 1)."""
    out = tmp_path / "out"
    run = Run(["compare", "-p", "baseline", "-p", "random", "-m", "training_facility_1", "-n", "4000",
               "--output-dir", str(out)], migrated_home, tmp_path)  # fmt: skip
    run.wait_for_line("Prefect flow run", timeout=180)
    time.sleep(2.0)
    started = time.monotonic()
    code, children, stdout = run.stop(signal.SIGINT, group=True)
    assert code == 130, stdout
    assert time.monotonic() - started < 30
    assert not [pid for pid in children if alive(pid)], "processes left behind"
    result = result_of(out)
    assert result["outputs"]["interrupted_by"] == "SIGINT"
    assert result["errors"] == ["policy_comparison: interrupted by SIGINT"]


@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_stopped_sweep_marks_its_running_trials_and_resumes_them(tmp_path, migrated_home, signum):
    import optuna

    from daf.config import DAFSweepConfig
    from daf.sweeps._study import storage_url

    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"name: stopped\noutput_dir: {tmp_path / 'out'}\npolicy_class_path: mlp\nstrategy: grid\n"
        "search_space: {learning_rate: [0.001, 0.003]}\ntraining_steps_per_trial: 2000000\n"
        "episodes_per_trial: 1\npruner: none\nmax_parallel_jobs: 2\ndevice: cpu\ntraining: {num_envs: 4}\n"
    )
    run = Run(["sweep", "--config", str(config), "--parallel"], migrated_home, tmp_path)
    run.wait_for_line("Prefect flow run", timeout=180)
    runs_dir = tmp_path / "out" / "sweeps" / "stopped" / "checkpoints"
    while len(list(runs_dir.glob("*/metrics.jsonl"))) < 2:  # both workers are training
        assert run.proc.poll() is None
        time.sleep(0.5)
    code, children, stdout = run.stop(signum)

    assert code == 128 + signum, stdout
    assert not [pid for pid in children if alive(pid)], "sweep workers or the server left behind"
    result = result_of(tmp_path / "out")
    assert result["errors"][0].startswith(f"sweep_execution: interrupted by {signal.Signals(signum).name}")

    # Resumable: each interrupted trial is queued again with its grid point (what resuming the sweep runs first).
    cfg = DAFSweepConfig.from_yaml(config)
    study = optuna.load_study(study_name="stopped", storage=storage_url(cfg))
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert {t.params["learning_rate"] for t in interrupted} == {0.001, 0.003}
    assert all("runs again when the sweep is resumed" in t.user_attrs["error"] for t in interrupted)
    # Each stopped trial queued its own re-run (same grid point, same run number: it resumes its checkpoint).
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert sorted(t.user_attrs["retry_of"] for t in waiting) == sorted(t.number for t in interrupted)
    assert sorted(t.params["learning_rate"] for t in waiting) == [0.001, 0.003]


# The Interrupted these tests' finalizer drops is what they are about: pytest reports it as unraisable.
dropped_in_a_finalizer = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class SignalledInAFinalizer:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here; Python drops what it raises


@dropped_in_a_finalizer
def test_a_stop_whose_interrupted_python_dropped_in_a_finalizer_stops_training_at_the_next_update(tmp_path):
    steps, went_on = [], []

    def hook(step, policy):
        steps.append(step)
        assert len(steps) < 5, "training went on after the stop"
        if len(steps) == 2:
            SignalledInAFinalizer()  # collected at once
            went_on.append(True)  # the Interrupted did not come out of the finalizer

    config = DAFTrainingConfig(
        policy_class_path="mlp", missions=["training_facility_1"], num_envs=2, num_steps=16,
        num_training_steps=10_000_000, checkpoint_dir=str(tmp_path), progress=False,
    )  # fmt: skip
    with stop_on_signals(), pytest.raises(Interrupted) as stopped:
        train(config, on_update=hook)
    assert went_on and len(steps) == 2  # stopped at the update after the signal, before its hook
    assert stopped.value.signum == signal.SIGTERM
    assert "keeps its last complete checkpoint" in "; ".join(stopped.value.__notes__)


@dropped_in_a_finalizer
@pytest.mark.parametrize("loop", ["batched", "per-agent"])
def test_a_stop_whose_interrupted_python_dropped_in_a_finalizer_stops_evaluation_at_the_next_step(
    loop, per_agent_package
):
    class_path = "random" if loop == "batched" else f"{per_agent_package}.PerAgentWalker"
    done, went_on = [], []

    def progress(event):
        done.append(event.done)
        if len(done) == 1:
            SignalledInAFinalizer()
            went_on.append(True)

    with stop_on_signals(), pytest.raises(Interrupted) as stopped:
        evaluate(PolicySpec(class_path=class_path), "training_facility_1", 6, concurrent_episodes=1, progress=progress)
    assert went_on and done == [1]  # stopped in the second episode, not after the sixth
    assert stopped.value.signum == signal.SIGTERM


class Stopped(Exception):
    """What the SIGTERM handler of the tests below raises: the handler stop_at_safe_points holds back."""


@pytest.fixture
def sigterm_raises_stopped():
    def handler(signum, frame):
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, previous)


def wait_until_held(timeout: float = 10.0) -> None:
    """Until the signal this process sent itself has reached its handler (on a busy machine, not at once)."""
    deadline = time.monotonic() + timeout
    while stop_requested() is None:
        assert time.monotonic() < deadline, "the signal did not arrive"
        time.sleep(0.01)


def test_a_signal_inside_stop_at_safe_points_raises_at_the_next_safe_point(sigterm_raises_stopped):
    reached, handler = [], signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped):
        with stop_at_safe_points():
            os.kill(os.getpid(), signal.SIGTERM)
            wait_until_held()  # the handler ran and only held the signal
            reached.append("after the signal")
            assert stop_requested() == signal.SIGTERM  # what other threads' safe points see
            raise_if_stop_requested()
            reached.append("after the safe point")
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGTERM) is handler and stop_requested() is None  # the block's handler is gone


def test_a_signal_after_the_last_safe_point_is_raised_when_the_block_ends(sigterm_raises_stopped):
    with pytest.raises(Stopped):
        with stop_at_safe_points():
            os.kill(os.getpid(), signal.SIGTERM)
            wait_until_held()
    with stop_at_safe_points():  # the next block starts with no signal held
        raise_if_stop_requested()


def test_stop_at_safe_points_raises_prefects_termination_signal_inside_a_flow_run():
    # The real chain of a `daf` command: DAF's handler, then Prefect's (a flow run's), then the safe-point block.
    from prefect.exceptions import TerminationSignal
    from prefect.utilities.engine import capture_sigterm

    seen = []
    with stop_on_signals(), pytest.raises(Interrupted) as stopped:
        with capture_sigterm():  # Prefect's SIGTERM handler raises TerminationSignal; it then re-signals DAF's
            try:
                with stop_at_safe_points():
                    os.kill(os.getpid(), signal.SIGTERM)
                    wait_until_held()
                    raise_if_stop_requested()
            except TerminationSignal:
                seen.append("TerminationSignal")
                raise
    assert seen == ["TerminationSignal"] and stopped.value.signum == signal.SIGTERM


def test_signals_at_random_points_of_popen_polls_never_leave_its_lock_held(sigterm_raises_stopped):
    """The env pool's hang: an exception raised in Popen.poll between its lock's acquire and its try left the lock
    held, and the close after it waited forever. Without stop_at_safe_points about 6 in 100 of these signals do
    that. They come from another process, as a scheduler's do: one a thread sends lands only where the main thread
    gives up the GIL, never inside poll."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        for _ in range(200):
            with pytest.raises(Stopped), stop_at_safe_points():
                sender = subprocess.Popen(["kill", "-TERM", str(os.getpid())])
                while stop_requested() is None:
                    child.poll()
                raise_if_stop_requested()
            sender.wait()
    finally:
        child.kill()
        assert child.wait(timeout=10) == -signal.SIGKILL  # waits forever (TimeoutExpired) when the lock is held


def test_a_second_signal_inside_stop_at_safe_points_kills_the_children_and_exits_at_once(tmp_path):
    script = (
        "import os, signal, subprocess, sys, time\n"
        "from daf.interrupts import stop_at_safe_points, stop_requested\n"
        "with stop_at_safe_points():\n"
        "    child = subprocess.Popen(['sleep', '60'])\n"
        "    print(child.pid, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    while stop_requested() is None:\n"
        "        time.sleep(0.01)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143 and time.monotonic() - started < 20, done.stderr
    child, deadline = int(done.stdout.split()[0]), time.monotonic() + 10
    while alive(child):  # SIGKILL was sent; the kernel ends it a moment later (left alone it sleeps for 60 s)
        assert time.monotonic() < deadline, "the child was not killed"
        time.sleep(0.1)
