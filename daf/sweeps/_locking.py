"""A lock per study, held while a sweep run asks the study for its next trial, so that sweep runs sharing a study
(on one machine or many) never ask at the same instant: Optuna's samplers read the trials, then add one, and two
askers between those steps would draw the same grid point.

Optuna has no such lock, so it is taken from the study's own database: PostgreSQL's advisory locks and MySQL's
GET_LOCK work across machines; SQLite (one machine) gets an exclusive lock on a file beside the database. Other
storages are not locked; concurrent sweep runs on them may ask twice for one grid point.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import make_url


def _key(study_name: str) -> int:
    # PostgreSQL's advisory locks take a signed 64-bit key.
    return int.from_bytes(hashlib.sha256(f"daf-sweep:{study_name}".encode()).digest()[:8], "big", signed=True)


@cache
def _engine(url: str) -> sqlalchemy.Engine:
    # One small pool per storage for the lock's own connection (Optuna's storage keeps its own engine).
    return sqlalchemy.create_engine(url, pool_size=1, max_overflow=1, pool_pre_ping=True)


@contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """Hold the study's lock for the block (waiting for it while another sweep run holds it)."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        database = make_url(url).database
        if not database or database == ":memory:":  # a study no other process can see
            yield
            return
        with open(Path(database).with_suffix(".ask.lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    if backend == "postgresql":
        take, give = "SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"
        params: dict[str, object] = {"key": _key(study_name)}
    elif backend in ("mysql", "mariadb"):
        take, give = "SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)"
        params = {"key": f"daf-sweep:{study_name}"[:64]}
    else:
        yield
        return
    with _engine(url).connect() as connection:
        connection.execute(sqlalchemy.text(take), params)
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text(give), params)
            connection.commit()
