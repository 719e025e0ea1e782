"""An env worker process: steps its slots of a run's environments into the learner's shared arrays on command.

Started by daf.vecenv.pool as `python -m daf.vecenv._worker FD` (a fresh interpreter: not a fork of a learner
that holds threads, and not multiprocessing's spawn, which re-runs the user's __main__ script). FD is its end of
a socket pair; it reads one start message, maps the shared arrays, says "ready", then answers each ("step",
block) with ("stepped", episodes finished) until ("close",), EOF, or its parent's death (PR_SET_PDEATHSIG).
Any exception goes back to the learner as ("error", traceback) before the process exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection

import numpy as np

from daf.vecenv._shared import SharedArrays
from daf.vecenv.inprocess import VecEnv

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    # A learner killed with SIGKILL runs no cleanup: the kernel then kills its workers. Linux only; elsewhere the
    # closed socket (EOF on the next recv) ends the worker.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(1)


def serve(conn: Connection) -> None:
    start = conn.recv()
    _die_with_parent(start["parent"])
    shared = SharedArrays.attach(start["path"], start["layout"], start["size"])
    first_row = start["first_row"]

    def allocate(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        whole = shared.arrays[name]
        view = whole[first_row : first_row + shape[0]]
        if view.shape != tuple(shape) or view.dtype != np.dtype(dtype):
            raise ValueError(f"shared array {name}: {view.shape} {view.dtype}, expected {shape} {np.dtype(dtype)}")
        return view

    first, stop = start["slots"]
    envs = VecEnv(
        start["missions"], start["num_envs"], start["seed"], weights=start["weights"], slots=range(first, stop),
        configs=start["configs"], allocate=allocate,
    )  # fmt: skip
    try:
        conn.send(("ready", None))
        blocks = start["blocks"]  # block -> (first, stop) in this worker's slot numbering
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the learner is gone
                return
            if message[0] == "close":
                return
            envs.step_slots(*blocks[message[1]])
            conn.send(("stepped", envs.pop_finished()))
    finally:
        envs.close()


def main(fd: int) -> None:
    # Ctrl-C reaches the whole process group: the learner handles it and closes its workers; a worker that died of
    # it first would turn a clean stop into a "worker crashed" error.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    try:
        serve(conn)
    except BaseException:  # noqa: BLE001 - whatever it was, the learner must hear it rather than wait
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
        sys.exit(1)


if __name__ == "__main__":
    main(int(sys.argv[1]))
