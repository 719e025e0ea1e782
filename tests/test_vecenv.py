"""Env worker processes (daf.vecenv.pool): the same episodes as in-process stepping, the same weights, and failures
that name the worker instead of hanging, with no process left behind on any exit path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from daf.config import ConfigError, DAFTrainingConfig
from daf.interrupts import descendants
from daf.training import train
from daf.vecenv import EnvWorkerError, EnvWorkerPool, VecEnv

MISSIONS = ["training_facility_1", "training_facility_2"]  # different agent counts per slot would show as well


def _worker_pids(parent: int) -> list[int]:
    found = []
    for pid in descendants(parent):
        try:
            if b"daf.vecenv._worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def _mapped_env_files(pid: int) -> set[Path]:
    """The shared files (daf-envs-*) process `pid` maps: its own, not another test process's."""
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and "daf-envs-" in fields[5]:
            paths.add(Path(fields[5].removesuffix(" (deleted)")))
    return paths


def _gone(pids: list[int], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("overlap", [False, True])
def test_workers_step_the_same_episodes_as_the_learners_own_process(overlap):
    local = VecEnv(MISSIONS, 6, seed=3)
    pool = EnvWorkerPool(MISSIONS, 6, seed=3, num_workers=2, overlap=overlap)
    try:
        assert pool.num_rows == local.num_rows and len(pool.blocks) == (2 if overlap else 1)
        assert np.array_equal(pool.observations, local.observations)
        rng = np.random.default_rng(0)
        for _ in range(450):  # past the end of several episodes of both missions
            actions = rng.integers(0, len(local.env_info.all_action_names), local.num_rows)
            assert np.array_equal(pool.step(actions), local.step(actions))
            assert np.array_equal(pool.observations, local.observations)
            assert np.array_equal(pool.dones, local.dones)
        ours, theirs = local.pop_finished(), pool.pop_finished()
        assert len(ours) >= 10
        assert [(m, o.seed, o.agent_rewards, o.steps) for m, o in theirs] == [
            (m, o.seed, o.agent_rewards, o.steps) for m, o in ours
        ]
    finally:
        local.close()
        pool.close()


def _weights(tmp_path, policy: str, **settings) -> dict[str, torch.Tensor]:
    config = DAFTrainingConfig(
        policy_class_path=policy,
        missions=["training_facility_1"],
        num_envs=6,
        num_steps=32,
        bptt_horizon=8,
        num_training_steps=3072,
        checkpoint_dir=str(tmp_path),
        run_id=f"{policy}-{len(list(tmp_path.iterdir()))}",
        progress=False,
        **settings,
    )
    return torch.load(train(config).final_checkpoint, weights_only=True)["state_dict"]


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("policy", ["mlp", "lstm"])
def test_training_with_env_workers_is_deterministic(tmp_path, policy):
    in_process = _weights(tmp_path, policy)
    # One block: exactly in-process stepping's arithmetic, only stepped elsewhere.
    assert _equal(_weights(tmp_path, policy, num_env_workers=3, env_overlap=False), in_process)
    # Two blocks (double buffering): the blocks do not depend on the worker count, so neither do the weights.
    overlapped = _weights(tmp_path, policy, num_env_workers=1)
    assert _equal(_weights(tmp_path, policy, num_env_workers=2), overlapped)
    assert not _worker_pids(os.getpid())  # every run closed its workers


def test_a_killed_worker_is_a_clear_error_not_a_hang():
    pool = EnvWorkerPool(MISSIONS, 4, seed=0, num_workers=2)
    workers = _worker_pids(os.getpid())
    try:
        assert len(workers) == 2
        victim = pool._workers[1].process.pid
        os.kill(victim, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(EnvWorkerError, match=rf"env worker 1 \(pid {victim}, slots 2-3\) .*signal SIGKILL"):
            for _ in range(100):
                pool.step(np.zeros(pool.num_rows, dtype=np.int64))
        assert time.monotonic() - started < 10
    finally:
        pool.close()
    assert _gone(workers)


def test_an_exception_in_a_worker_reaches_the_learner_with_its_traceback():
    pool = EnvWorkerPool(MISSIONS, 4, seed=0, num_workers=2)
    workers = _worker_pids(os.getpid())
    try:
        pool._workers[0].conn.send(("step", 7))  # a block the worker does not have: KeyError inside it
        with pytest.raises(EnvWorkerError, match=r"(?s)env worker 0 .* failed:\nTraceback .*KeyError: 7"):
            pool._workers[0].receive()
    finally:
        pool.close()
    assert _gone(workers)


def test_an_error_in_training_closes_the_workers(tmp_path):
    def fail(step, policy):
        raise RuntimeError("the hook failed")

    config = DAFTrainingConfig(
        policy_class_path="mlp", missions=["training_facility_1"], num_envs=4, num_steps=16,
        num_training_steps=4096, checkpoint_dir=str(tmp_path), progress=False, num_env_workers=2,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="the hook failed"):
        train(config, on_update=fail)
    assert _gone(_worker_pids(os.getpid()), timeout=1.0)


def test_workers_die_with_a_learner_killed_outright(tmp_path):
    script = (
        "from daf.vecenv import EnvWorkerPool\n"
        "pool = EnvWorkerPool(['training_facility_1'], 4, seed=0, num_workers=2)\n"
        "print('ready', flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    learner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert learner.stdout.readline().strip() == "ready"
        workers = _worker_pids(learner.pid)
        assert len(workers) == 2
        shared = {path for pid in workers for path in _mapped_env_files(pid)}
        assert shared, "the env workers should map the learner's shared file"
        learner.kill()  # no cleanup runs in the learner
        learner.wait()
        assert _gone(workers), "env workers outlived their learner"
        assert not [p for p in shared if p.exists()]  # the shared file's name was removed once workers mapped it
    finally:
        learner.kill()


def test_more_workers_than_environments_is_refused():
    with pytest.raises(ConfigError, match=r"num_env_workers \(5\) must not exceed num_envs \(4\)"):
        DAFTrainingConfig.from_dict({"num_envs": 4, "num_env_workers": 5})
