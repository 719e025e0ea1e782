"""An exclusive lock on a run's directory, so that two processes never write one run (or sweep) at once."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def directory_lock(directory: Path, what: str, error: type[Exception]) -> Iterator[None]:
    """Hold `<directory>/.lock` while the block runs; `error` names `what` if another process holds it. The
    kernel drops the lock when its holder dies, even on SIGKILL, so a crash never leaves a run locked."""
    path = directory / ".lock"
    try:
        handle = path.open("w")
    except OSError as exc:
        raise error(f"{what}: directory {directory} is not writable: {exc}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise error(f"{what} is already running in another process (lock {path})") from None
        yield
