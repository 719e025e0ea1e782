"""Environment stepping in worker processes, overlapped with the learner's inference (the EnvPool / PufferLib
pattern).

`num_workers` processes each own a contiguous range of the run's slots and step them into arrays the learner
maps too (daf.vecenv._shared): observations, rewards and dones arrive without copies or pickling; a step costs
one small message per worker each way (the finished episodes' outcomes ride on the reply).

Rows come in `blocks`. With `overlap`, the slots are split into two halves: the learner infers and sends one
half's actions while the workers step the other half, so stepping hides behind inference (double buffering).
Each half is sampled as its own batch, so a run's numbers differ from in-process stepping, though the same seed
and settings give the same weights every time: the order of every operation is fixed, whatever the timing.
Without `overlap` there is one block: every row is inferred and sampled in one batch as in the learner's own
process, and a run gives exactly the weights in-process stepping gives (the workers step the same slots with the
same seeds and actions), only stepped in parallel.

A worker that raises, dies or is killed surfaces as EnvWorkerError naming it and its slots, never a hang; `close`
ends the workers on every exit path, and a learner killed outright takes them with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection

import numpy as np
from mettagrid.config.mettagrid_config import MettaGridConfig
from mettagrid.mettagrid_c import (
    dtype_actions,
    dtype_observations,
    dtype_rewards,
    dtype_terminals,
    dtype_truncations,
)

from daf.mission_mix import assign_missions
from daf.missions import get_mission
from daf.simulation import EpisodeOutcome, env_interface
from daf.vecenv._blocks import BlockStepping
from daf.vecenv._shared import SharedArrays

START_TIMEOUT_S = 120.0  # a worker builds its simulations in about a second; a wedged one must not hang a run
CLOSE_TIMEOUT_S = 10.0


class EnvWorkerError(RuntimeError):
    """An env worker process failed, died or did not start; the message names it, its slots and the cause."""


def split(count: int, parts: int) -> list[tuple[int, int]]:
    """`range(count)` cut into `parts` contiguous near-equal (first, stop) ranges."""
    edges = np.linspace(0, count, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


class _Worker:
    def __init__(self, index: int, slots: tuple[int, int], start: dict):
        self.index, self.slots = index, slots
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ)
        # The worker imports DAF and the missions' code as this process does, wherever they were found.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daf.vecenv._worker", str(child_end.fileno())],
            pass_fds=(child_end.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        child_end.close()
        self.conn = Connection(os.dup(parent_end.fileno()))
        parent_end.close()
        self.conn.send(start)

    @property
    def name(self) -> str:
        first, stop = self.slots
        return f"env worker {self.index} (pid {self.process.pid}, slots {first}-{stop - 1})"

    def send(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except OSError:  # a worker that died takes its end of the socket with it
            code = _wait(self.process, 5.0)
            raise EnvWorkerError(f"{self.name} exited with {_describe_exit(code)}: it cannot step") from None

    def receive(self, timeout_s: float | None = None) -> object:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.conn.poll(1.0):
            code = self.process.poll()
            if code is not None:
                raise EnvWorkerError(f"{self.name} exited with {_describe_exit(code)} before replying")
            if deadline is not None and time.monotonic() > deadline:
                raise EnvWorkerError(f"{self.name} did not answer within {timeout_s:.0f} s")
        try:
            kind, payload = self.conn.recv()
        except (EOFError, OSError):
            code = _wait(self.process, 5.0)
            raise EnvWorkerError(f"{self.name} closed its connection ({_describe_exit(code)})") from None
        if kind == "error":
            raise EnvWorkerError(f"{self.name} failed:\n{payload}")
        return payload

    def close(self) -> None:
        try:
            self.conn.send(("close",))
        except OSError:
            pass
        if _wait(self.process, CLOSE_TIMEOUT_S) is None:
            self.process.kill()
            self.process.wait()
        self.conn.close()


def _wait(process: subprocess.Popen, timeout_s: float) -> int | None:
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code yet"
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


class EnvWorkerPool(BlockStepping):
    """`num_envs` simulations of `missions` (mixed as VecEnv mixes them) stepped by `num_workers` processes; the same
    stepping interface as daf.vecenv.inprocess.VecEnv (blocks, send, wait, step, pop_finished, close)."""

    def __init__(
        self,
        missions: list[str],
        num_envs: int,
        seed: int,
        num_workers: int,
        overlap: bool = True,
        weights: list[float] | None = None,
        configs: dict[str, MettaGridConfig] | None = None,
    ):
        if not 1 <= num_workers <= num_envs:
            raise ValueError(f"num_workers must be between 1 and num_envs ({num_envs}), got {num_workers}")
        configs = configs or {m: get_mission(m) for m in missions}
        self.env_info = env_interface(list(configs.values()))
        agents = [configs[m].game.num_agents for m in assign_missions(missions, weights, num_envs)]
        row_of_slot = np.concatenate([[0], np.cumsum(agents)]).astype(int)
        n = int(row_of_slot[-1])
        self._shared = SharedArrays.create(
            {
                "observations": ((n, *self.env_info.observation_shape), dtype_observations),
                "terminals": ((n,), dtype_terminals),
                "truncations": ((n,), dtype_truncations),
                "rewards": ((n,), dtype_rewards),
                "actions": ((n,), dtype_actions),
                "dones": ((n,), np.float32),
                "step_rewards": ((n,), np.float32),
            }
        )
        arrays = self._shared.arrays
        self.observations, self.dones, self.rewards = arrays["observations"], arrays["dones"], arrays["step_rewards"]
        self._actions = arrays["actions"]
        block_slots = split(num_envs, 2 if overlap and num_envs >= 2 else 1)
        self.blocks = [slice(int(row_of_slot[a]), int(row_of_slot[b])) for a, b in block_slots]
        self.finished: list[tuple[str, EpisodeOutcome]] = []
        self._stepping = [False] * len(block_slots)
        self._workers: list[_Worker] = []
        self._block_workers: list[list[_Worker]] = [[] for _ in block_slots]
        try:
            for index, (first, stop) in enumerate(split(num_envs, num_workers)):
                blocks = {}
                for b, (lo, hi) in enumerate(block_slots):
                    if max(lo, first) < min(hi, stop):
                        blocks[b] = (max(lo, first) - first, min(hi, stop) - first)
                start = {
                    "parent": os.getpid(),
                    "path": self._shared.path,
                    "layout": self._shared.layout,
                    "size": self._shared.size,
                    "first_row": int(row_of_slot[first]),
                    "missions": missions,
                    "weights": weights,
                    "configs": configs,
                    "num_envs": num_envs,
                    "seed": seed,
                    "slots": (first, stop),
                    "blocks": blocks,
                }
                worker = _Worker(index, (first, stop), start)
                self._workers.append(worker)
                for b in blocks:
                    self._block_workers[b].append(worker)
            for worker in self._workers:
                worker.receive(START_TIMEOUT_S)  # "ready": its slots' first observations are in place
        except BaseException:
            self.close()
            raise
        self._shared.unlink()  # every worker has mapped it: the memory now ends with the last process using it

    @property
    def num_rows(self) -> int:
        return len(self._actions)

    def send(self, block: int, actions: np.ndarray) -> None:
        """Start stepping `block`'s rows with `actions` (returns at once)."""
        if self._stepping[block]:
            raise RuntimeError(f"block {block} is still stepping: wait for it before sending it new actions")
        self._actions[self.blocks[block]] = actions
        for worker in self._block_workers[block]:
            worker.send(("step", block))
        self._stepping[block] = True

    def wait(self, block: int) -> None:
        """Return once `block` has stepped (at once when it is not stepping): its rows' observations, `rewards` and
        `dones` are then this step's."""
        if not self._stepping[block]:
            return
        for worker in self._block_workers[block]:
            self.finished.extend(worker.receive())
        self._stepping[block] = False

    def close(self) -> None:
        """End every worker (a clean close message, then SIGKILL after CLOSE_TIMEOUT_S) and free the arrays."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()
        self._shared.close()
