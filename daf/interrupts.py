"""Stopping a DAF process with SIGINT or SIGTERM: at the next safe point, with its children.

Batch schedulers (Slurm at a time limit, Kubernetes on eviction, `timeout`, a supervisor) send SIGTERM first; a
user sends SIGINT (Ctrl-C). Python's default for SIGTERM ends the process on the spot, so nothing runs after it:
no result is written and the embedded Prefect server (a child process that Prefect stops at exit) is left behind.
Inside `stop_on_signals()` both signals raise `Interrupted` in the main thread instead, so the work unwinds like
any exception: training keeps its last complete checkpoint, a sweep marks its running trial interrupted (it runs
again on resume), the pipeline writes its result naming the signal, and the process exits with 128 + the signal
number (130 for SIGINT, 143 for SIGTERM) after Prefect's exit handlers have stopped the server. A second signal
stops at once: every descendant process is killed and the process exits with the same code.

While a Prefect flow runs, Prefect's own SIGTERM handler raises `prefect.exceptions.TerminationSignal` instead;
`signal_of` names the signal of either.

Long work (training, evaluation, a sweep's driver) runs inside `stop_at_safe_points()`: there a signal is only
recorded, and the exception its handler raises comes at the work's next safe point (`raise_if_stop_requested`,
called every step). A handler's exception may otherwise land between any two bytecodes, which library code does not
survive: `subprocess.Popen.poll` takes its waitpid lock with `if not lock.acquire(False)` and releases it in a
`try` that starts one line later, so an exception landing between the two leaves the lock held, and the next
`wait` blocks forever. A loop of `poll` calls was left with the lock held by 6 in 100 SIGTERMs sent from another
process (tests/test_signals.py); the env pool polls its workers every second, and a training with env workers,
stopped by SIGTERM on CI, hung in its close.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal reached this process. A KeyboardInterrupt, so that code which stops on Ctrl-C stops on it."""

    def __init__(self, signum: int, result: object = None):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.result = result  # the PipelineResult written before the pipeline stopped, when there is one

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __reduce__(self):
        return (type(self), (self.signum, self.result))


def signal_of(exc: BaseException) -> int | None:
    """The signal a stop exception stands for: Interrupted's, Prefect's TerminationSignal's, SIGINT for a plain
    KeyboardInterrupt; None for anything else."""
    if isinstance(exc, Interrupted):
        return exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    signum = getattr(exc, "signal", None)  # prefect.exceptions.TerminationSignal (no Prefect import here)
    return signum if type(exc).__name__ == "TerminationSignal" and isinstance(signum, int) else None


def describe_stop(exc: BaseException) -> str:
    """`interrupted by SIGTERM`, with the notes the interrupted work added (what was kept, how to resume)."""
    signum = signal_of(exc) or signal.SIGINT
    notes = "; ".join(getattr(exc, "__notes__", []))
    return f"interrupted by {signal.Signals(signum).name}" + (f": {notes}" if notes else "")


def descendants(pid: int | None = None) -> list[int]:
    """Every process below `pid` (this process by default), children first, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may contain spaces and parentheses
        parents.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid or os.getpid()]
    while queue:
        for child in parents.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def kill_descendants() -> None:
    for pid in descendants():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_child_processes(grace_s: float = 30.0) -> None:
    """SIGTERM to this process's multiprocessing children (worker processes), SIGKILL to any still alive after
    `grace_s`: a worker that raises Interrupted on SIGTERM (raise_on_stop_signals) records what it keeps first."""
    workers = multiprocessing.active_children()
    for proc in workers:
        proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in workers:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()


def raise_on_stop_signals() -> None:
    """For a worker process (a sweep's): SIGINT and SIGTERM raise Interrupted, for as long as the process lives."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    for s in STOP_SIGNALS:
        signal.signal(s, handler)


# Stop signals received in the outermost stop_on_signals block so far: nested blocks (the CLI around an
# orchestrator) share it, so a second signal still stops at once after the inner block has given the outer one its
# handler back.
_received: list[int] = []
_depth = 0


def _stop_at_once(signum: int) -> None:
    """What a second stop signal does, in either kind of block: kill every descendant, exit."""
    kill_descendants()
    os._exit(128 + signum)


def _restore_handlers(previous: dict[int, object]) -> None:
    for s, handler in previous.items():
        # None: a handler installed outside Python, which cannot be put back; the default is the nearest.
        signal.signal(s, signal.SIG_DFL if handler is None else handler)


def _handler(signum: int, frame: object) -> None:
    if _received:
        _stop_at_once(signum)
    _received.append(signum)
    raise Interrupted(signum)


def stop_requested() -> int | None:
    """The stop signal this process received inside stop_on_signals (or one stop_at_safe_points holds back), or
    None. Work running in other threads (where Python delivers no signal), such as a sweep trial on the thread task
    runner, polls it at its safe points and stops there by raising Interrupted."""
    if _received:
        return _received[0]
    held = _held
    return held.signum if held is not None and held.pending else None


def request_stop(signum: int) -> None:
    """Make stop_requested() say `signum`: for a stop that reached the main thread as another exception (Prefect's
    TerminationSignal), so that work in other threads stops too."""
    if not _received:
        _received.append(signum)


def raise_if_stop_requested() -> None:
    """Raise Interrupted once the process has received a stop signal: called at the safe points of long work
    (every training update, every evaluation step). Other threads get no signal of their own; the main thread gets
    its Interrupted from the handler, but Python drops an exception raised while a finalizer runs (a `__del__`, a
    weakref callback: it prints "Exception ignored in ..." and goes on), so a signal landing there would be lost
    without this check.
    Work that caught the handler's Interrupted does not come back to a safe point: it is unwinding.
    Inside stop_at_safe_points, the main thread runs the held signal's handler here."""
    held = _held
    if held is not None and held.pending and threading.current_thread() is threading.main_thread():
        held.deliver()
    signum = stop_requested()
    if signum is not None:
        raise Interrupted(signum)


@contextmanager
def stop_on_signals(keep_after_stop: bool = False) -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted in the main thread while the block runs; a second one kills every
    descendant process and exits at once. Outside the main thread (where Python delivers no signals) it does
    nothing. The previous handlers come back afterwards, except with `keep_after_stop` once a signal was received:
    a process that is exiting because of it (the CLI) keeps "a second signal stops at once" through its exit
    handlers (Prefect's stop of its embedded server waits up to 5 s)."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        _received.clear()
    previous = {s: signal.signal(s, _handler) for s in STOP_SIGNALS}
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not (keep_after_stop and _received):
            _restore_handlers(previous)
            if _depth == 0:
                _received.clear()  # the stop ended this block's work; later work in this process runs


class _HeldSignal:
    """The first stop signal received inside stop_at_safe_points, and the handlers the block replaced."""

    def __init__(self) -> None:
        self.previous: dict[int, object] = {}
        self.signum: int | None = None
        self.delivered = False

    @property
    def pending(self) -> bool:
        """A signal was received and its handler has not run yet."""
        return self.signum is not None and not self.delivered

    def install(self) -> None:
        # One at a time, each recorded at once: a signal may arrive between two, and deliver() needs its handler.
        for s in STOP_SIGNALS:
            self.previous[s] = signal.signal(s, _hold)

    def deliver(self) -> None:
        """Do what the replaced handler does with the signal: raise its exception (DAF's Interrupted, Prefect's
        TerminationSignal, Python's KeyboardInterrupt), nothing for SIG_IGN, or end the process for SIG_DFL."""
        self.delivered = True
        handler = self.previous[self.signum]
        if callable(handler):
            handler(self.signum, None)
        elif handler != signal.SIG_IGN:
            signal.signal(self.signum, signal.SIG_DFL)
            os.kill(os.getpid(), self.signum)


_held: _HeldSignal | None = None


def _hold(signum: int, frame: object) -> None:
    if _held.signum is not None:  # a second signal
        _stop_at_once(signum)
    _held.signum = signum


@contextmanager
def stop_at_safe_points() -> Iterator[None]:
    """SIGINT and SIGTERM take effect only at the block's safe points (raise_if_stop_requested), where the handler
    the block replaced runs, or when the block ends, whichever comes first; a second signal kills every descendant
    and exits at once. Work that calls raise_if_stop_requested often (every step) runs in it: see the module's
    docstring for why. Nested blocks, and blocks outside the main thread (where Python delivers no signals), change
    nothing."""
    global _held
    if _held is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = _held = _HeldSignal()  # before its handler is installed: the handler records into it
    try:
        held.install()
        yield
    finally:
        _restore_handlers(held.previous)
        _held = None
        if held.pending:  # it came after the block's last safe point
            held.deliver()
