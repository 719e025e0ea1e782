"""What every DAF task shares: which errors are retried, how cache keys are made, per-run options."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

import daf
from daf.config import DAFConfig
from daf.faults import TransientFault

# Data and configuration errors are final; these are the failures a retry may cure.
_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)

RETRY_OPTIONS: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.2,
}


# Exceptions defined by DAF's own packages are deliberate: raised with a message that says what is wrong (an unknown
# mission, a failed pipeline) and which stage. Prefect logs every failed task or flow run with a traceback, and on a
# worker ends a failed flow run's log with "Engine execution exited with unexpected exception"; for these errors
# that buries the one line that matters under frames of Prefect's engine. Anything else (a bug, a library error)
# keeps its traceback.
_DAF_PACKAGES = ("daf", "tasks", "flows")
_PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine")


class _OneLineForDeliberateErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__module__.split(".")[0] in _DAF_PACKAGES:
            record.exc_info, record.exc_text = None, None
            if "unexpected exception" in str(record.msg):  # Prefect's generic line: say what failed instead
                record.msg, record.args = str(exc), ()
        return True


for _name in _PREFECT_RUN_LOGGERS:
    logging.getLogger(_name).addFilter(_OneLineForDeliberateErrors())


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientFault | ConnectionError | TimeoutError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()  # free what the failed attempt held before retrying
            return True
    except ImportError:
        pass
    return isinstance(exc, OSError) and not isinstance(exc, _PERMANENT_OS_ERRORS)


def retry_transient(task: Task, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry only transient failures."""
    try:
        state.result()
    except BaseException as exc:  # the task's own exception, re-raised by result()
        return is_transient(exc)
    return False


@lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str | os.PathLike[str] | None) -> str | None:
    """sha256 of a checkpoint or bundle (memoised on mtime and size); None for no file."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        return f"missing:{p}"
    st = p.stat()
    return _file_digest(str(p.resolve()), st.st_mtime_ns, st.st_size)


def make_cache_key(fn: Any, payload: dict[str, Any]) -> str:
    """Key on validated inputs, file contents, the DAF version and the task's own source: never on tensors."""
    source = hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
    blob = json.dumps({"payload": payload, "daf": daf.__version__, "source": source}, sort_keys=True, default=str)
    return f"{fn.__name__}-{hashlib.sha256(blob.encode()).hexdigest()}"


def configured(task: Task, config: DAFConfig, *, gpu: bool = False) -> Task:
    """The task with this run's cache switches, expiration and tags applied."""
    options: dict[str, Any] = {"refresh_cache": config.refresh_cache}
    if config.cache_expiration_hours is not None:
        options["cache_expiration"] = timedelta(hours=config.cache_expiration_hours)
    if not config.use_cache:
        options["cache_policy"] = NO_CACHE
    # Only GPU tasks are tagged. Prefect asks the server for the tag concurrency limits of every tagged task
    # run; the default SQLite-backed server intermittently answers that call with 503 (database locked) and
    # the client retries after 2 s, which made a 30 s comparison flow 4 s slower (bench/orchestration_overhead.py).
    # A GPU task is long and needs the "gpu" limit, so it pays that.
    if gpu:
        options["tags"] = {*task.tags, "gpu"}
    return task.with_options(**options)


def uses_gpu(config: DAFConfig) -> bool:
    if config.device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()
