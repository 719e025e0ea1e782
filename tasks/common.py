"""What every DAF task shares: which errors are retried, how cache keys are made, per-run options, and how
progress events and errors reach Prefect's run logs."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.tasks import exponential_backoff

from daf.config import DAFConfig
from daf.content import DAF_PACKAGE, daf_source_digest, mission_digest, path_digest, policy_source_digest
from daf.events import LOG_RECORD_FIELD, ProgressEvent, TrainingProgress
from daf.faults import TransientFault
from daf.tasks.artifacts import ProgressArtifact
from daf.tasks.result_records import DAFJSONSerializer, verified_storage

# Data and configuration errors are final; these are the failures a retry may cure.
T = TypeVar("T")

_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)

RETRY_OPTIONS: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.2,
}


# Exceptions defined by DAF's own packages are deliberate: raised with a message that says what is wrong (an unknown
# mission, a failed pipeline) and which stage. Prefect logs a failed task run twice at ERROR with a traceback ("Task
# run failed with exception", "Finished in state Failed"), the failed flow run once more ("Finished in state
# Failed", at INFO), and on a worker ends the log with "Engine execution exited with unexpected exception" and the
# engine's frames. For these errors that is the same message four times, buried in frames: the pipeline reports
# its own failure once, at ERROR (flows/common.py), and these records are dropped. A retry's line stays, and
# anything else (a bug, a library error) keeps its traceback.
_PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine")


def _is_deliberate(exc: BaseException | None) -> bool:
    return exc is not None and type(exc).__module__.split(".")[0] == DAF_PACKAGE


class _OneLineForDeliberateErrors(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._pipelines: set[str] = set()  # flow runs of DAF pipelines: they report their stages' failures
        self._reported: set[str] = set()  # task and flow runs whose failure DAF has reported itself

    def adopt(self, flow_run_id: str) -> None:
        self._pipelines.add(flow_run_id)

    def report(self, run_id: str) -> None:
        self._reported.add(run_id)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        flow_run_id = str(getattr(record, "flow_run_id", None) or "")
        task_run_id = str(getattr(record, "task_run_id", None) or "")
        if _is_deliberate(exc):
            in_pipeline = flow_run_id in self._pipelines
            if task_run_id and in_pipeline and " - Retry " not in record.getMessage():
                self._reported.add(task_run_id)  # the stage's failure reaches the pipeline's own line
                return False
            if "unexpected exception" in str(record.msg):  # the engine's last word on a failed flow run
                # Logged already by its pipeline (maybe in another process: Prefect may run the flow in a child).
                if getattr(exc, "logged_by_pipeline", False):
                    return False
                record.msg, record.args = str(exc), ()  # else say what failed, in one line
            record.exc_info, record.exc_text = None, None
            return True
        run_id = task_run_id or flow_run_id
        if run_id in self._reported and record.getMessage().startswith("Finished in state Failed"):
            self._reported.discard(run_id)
            return False
        return True


_ONE_LINE = _OneLineForDeliberateErrors()


def quiet_run_logs(flow_run_id: str | None = None) -> None:
    """One line for DAF's deliberate errors in the run logs (of the pipeline's flow run `flow_run_id`), and no
    per-request INFO lines from Prefect's HTTP client (which it logs once mettagrid has put a handler on the root
    logger). Called when a pipeline starts, not at import, so importing DAF changes no logging; calling it again
    changes nothing."""
    if flow_run_id is not None:
        _ONE_LINE.adopt(flow_run_id)
    for name in _PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        if _ONE_LINE not in logger.filters:
            logger.addFilter(_ONE_LINE)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def training_progress(title: str) -> Callable[[TrainingProgress], None]:
    """Progress of a training inside a task: every update onto a progress artifact titled `title`, every 10 % of
    the run into the task's log (and so onto the CLI's progress display)."""
    logger = get_run_logger()
    bar = ProgressArtifact(title)
    last_logged = [0]

    def on_progress(event: TrainingProgress) -> None:
        bar.update(event.step, event.total_steps)
        if event.step - last_logged[0] >= event.total_steps / 10 or event.step >= event.total_steps:
            last_logged[0] = event.step
            log_event(logger, event)

    return on_progress


def log_failure_once(logger: logging.Logger | logging.LoggerAdapter, flow_run_id: str, message: str) -> None:
    """The failed pipeline's one ERROR line: Prefect's own lines for this flow run's failure are dropped."""
    _ONE_LINE.report(flow_run_id)
    logger.error(message)


def log_event(logger: logging.Logger | logging.LoggerAdapter, event: ProgressEvent) -> None:
    """Log a progress event: its message for people, the event itself for the progress display (daf.events)."""
    logger.info(event.message(), extra={LOG_RECORD_FIELD: event})


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


def content_digests(class_path: str, data_path: str | None, missions: list[str]) -> dict[str, Any]:
    """What running a policy reads, by content: its weights (or other data file), the missions' resolved configs
    and the policy's code."""
    return {
        "data_sha256": path_digest(data_path),
        "missions_sha256": [mission_digest(m) for m in missions],
        "policy_source": policy_source_digest(class_path),
    }


def content_cached_task(
    name: str, task_run_name: str | Callable[[], str], payload: Callable[[dict[str, Any]], dict[str, Any]]
) -> Callable[[Callable[..., T]], Task[..., T]]:
    """A task retried on transient faults whose result persists under a key made from `payload(parameters)`
    (validated inputs and content_digests), so a run over the same content reuses it."""

    def decorate(fn: Callable[..., T]) -> Task[..., T]:
        def cache_key(context: Any, parameters: dict[str, Any]) -> str:
            return make_cache_key(fn, payload(parameters))

        return task(
            name=name,
            task_run_name=task_run_name,
            cache_policy=CacheKeyFnPolicy(cache_key_fn=cache_key),
            retry_condition_fn=retry_transient,
            persist_result=True,
            result_serializer=DAFJSONSerializer(),
            **RETRY_OPTIONS,
        )(fn)

    return decorate


def make_cache_key(fn: Any, payload: dict[str, Any]) -> str:
    """Key on validated inputs and the content of everything they name (daf.content), plus DAF's own source
    digest (which covers the task's code): never on tensors, paths or mtimes."""
    blob = json.dumps({"payload": payload, "daf_source": daf_source_digest()}, sort_keys=True, default=str)
    return f"{fn.__name__}-{hashlib.sha256(blob.encode()).hexdigest()}"


def configured(task: Task, config: DAFConfig, *, gpu: bool = False) -> Task:
    """The task with this run's cache switches, expiration and tags applied."""
    options: dict[str, Any] = {"refresh_cache": config.refresh_cache}
    if config.cache_expiration_hours is not None:
        options["cache_expiration"] = timedelta(hours=config.cache_expiration_hours)
    if not config.use_cache:
        options["cache_policy"] = NO_CACHE
    elif isinstance(task.cache_policy, CacheKeyFnPolicy):
        # Chosen here, at run time: Prefect's local storage path is a setting, read when the run starts.
        options["cache_policy"] = task.cache_policy.configure(key_storage=verified_storage())
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
