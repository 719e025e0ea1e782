"""Mapping stage outcomes onto PipelineResult, PipelineResult onto the flow run's final state, and running a
stage's tasks on the task runner the config names.

status -> flow-run state:
  success -> Completed          (every stage ran)
  partial -> Completed, named "Partial"  (an optional stage failed; outputs of the others are kept)
  failed  -> Failed             (a required stage failed)
  stopped by SIGINT/SIGTERM -> Cancelled   (status failed; the error and outputs["interrupted_by"] name it)
Completed states carry the PipelineResult as data; a Failed or Cancelled state carries a `PipelineFailed` exception
holding it (Prefect resolves a failed state's data into an exception on the worker path). Either way the result
is saved as `pipeline_result.json` in the run directory.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from prefect import Task, get_run_logger
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed, State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.urls import url_for

from daf.config import DAFConfig
from daf.events import StageNote
from daf.interrupts import describe_stop, signal_of
from daf.policy_urls import localized, weight_urls
from daf.result_store import run_files
from daf.results import FAILED, PARTIAL, STAGE_FAILED, STOPPED, SUCCESS, PipelineResult
from daf.tasks.artifacts import publish_pipeline_result, publish_report_link
from daf.tasks.common import log_event, log_failure_once, quiet_run_logs
from daf.tasks.storage import fetch_weights_task, store_files_task
from daf.text import printable
from daf.worker_settings import check_dask_address

T = TypeVar("T")
C = TypeVar("C", bound=DAFConfig)
# The optional last stage of every pipeline with a result_store: its outputs copied there.
STORAGE_STAGE = "result_storage"


class StageFailed(Exception):
    """A required stage failed; the pipeline stops."""


class PipelineFailed(Exception):
    """The data of a failed pipeline's final state: the PipelineResult, raised wherever Prefect resolves it."""

    logged_by_pipeline = True  # its message is in the run's log once already (tasks/common.py drops the engine's)

    def __init__(self, result: PipelineResult):
        super().__init__(f"{result.pipeline_name} pipeline failed: " + ("; ".join(result.errors) or "failed"))
        self.result = result

    def __reduce__(self):  # pickles (result persistence, process runners) with its result, not only the message
        return (type(self), (self.result,))


def error_message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


class Pipeline:
    """Runs stages in order and records each outcome in a PipelineResult."""

    def __init__(self, name: str, config: DAFConfig):
        self.started = time.perf_counter()
        self.interrupted_by: int | None = None
        self.result = PipelineResult(pipeline_name=name, status=SUCCESS, timestamp=datetime.now())
        run_id = flow_run.get_id() or uuid.uuid4().hex
        quiet_run_logs(str(run_id))
        stamp = self.result.timestamp.strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(config.output_dir).absolute() / "runs" / f"{name}-{stamp}-{run_id[:8]}"
        self.result_store = config.result_store
        self.result.outputs["flow_run_id"] = str(run_id)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.run_dir = None
            self._record("environment_validation", f"output_dir {config.output_dir} is not writable: {exc}")
            self.result.status = FAILED
            return
        self.result.outputs["run_dir"] = str(self.run_dir)
        log_event(get_run_logger(), StageNote(f"Prefect flow run '{flow_run.get_name() or run_id}' started ({name})"))

    def stage(self, name: str, fn: Callable[..., T], *args: Any, required: bool = True, **kwargs: Any) -> T | None:
        started = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:  # every stage failure is recorded with its stage name, never swallowed
            self.fail(name, exc, required=required)
            return None
        except (KeyboardInterrupt, TerminationSignal) as exc:  # SIGINT/SIGTERM: stop here, whatever the stage
            self.stop(name, exc)
            raise StageFailed(name) from None
        finally:
            self.result.outputs.setdefault("stage_seconds", {})[name] = round(time.perf_counter() - started, 3)
        self.result.stages_completed.append(name)
        return out

    def stop(self, name: str, exc: BaseException) -> None:
        """Record that a stop signal ended the pipeline in stage `name` (what the stage kept is in its notes)."""
        self.interrupted_by = signal_of(exc)
        self._record(name, describe_stop(exc), STOPPED)
        self.result.status = FAILED
        self.result.outputs["interrupted_by"] = signal.Signals(self.interrupted_by).name

    def _record(self, name: str, message: str, kind: str = STAGE_FAILED) -> None:
        self.result.stages_failed.append(name)
        self.result.errors.append(printable(f"{name}: {message}"))  # shown in terminals, logs and the UI
        if self.result.error_kind is None or kind == STOPPED:  # a stop outranks the failures it caused
            self.result.error_kind = kind

    def fail(self, name: str, exc: BaseException | str, required: bool = True) -> None:
        self._record(name, exc if isinstance(exc, str) else error_message(exc))
        if required:
            self.result.status = FAILED
            raise StageFailed(name)
        get_run_logger().warning(f"{self.result.errors[-1]} (an optional stage: the pipeline goes on)")
        if self.result.status == SUCCESS:
            self.result.status = PARTIAL

    def finish(self) -> State:
        self.result.total_time_seconds = time.perf_counter() - self.started
        link = None
        if self.run_dir is not None:
            path = self.run_dir / "pipeline_result.json"
            self.result.outputs["result_path"] = str(path)
            if self.result_store is not None and self.interrupted_by is None:
                try:
                    link = self.stage(STORAGE_STAGE, self._store_outputs, required=False)
                except StageFailed:  # a stop signal during the upload: recorded by stage(), the run ends Cancelled
                    pass
            self.result.save(path)
            if "stored" in self.result.outputs:  # the result itself last, now that it says where everything is
                try:
                    store_files_task(self.result_store, self.run_dir.name, {path.name: str(path)})
                except Exception as exc:
                    self.fail(STORAGE_STAGE, exc, required=False)
                    self.result.save(path)
        report = self.result.outputs.get("report_html")
        if report:
            link = link or Path(report).as_uri()
            try:
                publish_report_link(link, self.result.pipeline_name)
            except Exception as exc:  # an unreachable UI must not change the pipeline's outcome
                logging.getLogger(__name__).warning("could not publish the report link: %s", exc)
        try:
            publish_pipeline_result(self.result)
        except Exception as exc:  # an unreachable UI must not change the pipeline's outcome
            logging.getLogger(__name__).warning("could not publish the result artifact: %s", exc)
        if self.interrupted_by is not None:  # stopped by a signal: Cancelled on the server, not a failure of its own
            return Cancelled(message="; ".join(self.result.errors), data=PipelineFailed(self.result))
        if self.result.status == FAILED:
            failure = PipelineFailed(self.result)
            log_failure_once(get_run_logger(), self.result.outputs["flow_run_id"], str(failure))
            return Failed(message="; ".join(self.result.errors) or "failed", data=failure)
        if self.result.status == PARTIAL:
            return Completed(message="; ".join(self.result.errors), data=self.result, name="Partial")
        return Completed(message="all stages succeeded", data=self.result)

    def _store_outputs(self) -> str | None:
        """Copy the run directory and the checkpoints it produced to the result store (everything but the result
        file, which `finish` stores last); the browser link of the stored report, if there is one."""
        outputs = self.result.outputs
        checkpoints = [outputs.get("final_checkpoint"), outputs.get("best_checkpoint")]
        checkpoints += list((outputs.get("trained_checkpoints") or {}).values())
        files = run_files(self.run_dir, sorted({c for c in checkpoints if isinstance(c, str) and Path(c).is_file()}))
        files.pop("pipeline_result.json", None)
        report = outputs.get("report_html")
        link_to = Path(report).relative_to(self.run_dir).as_posix() if report else None
        stored = store_files_task(self.result_store, self.run_dir.name, files, link_to)
        outputs["stored"] = {"run": f"{self.result_store.rstrip('/')}/{self.run_dir.name}", "files": stored["files"]}
        return stored["link"]


def flow_run_reference() -> dict[str, str | None]:
    """The flow run a report comes from: its name, its id and, when it runs under a server with a UI, its page."""
    run_id = flow_run.get_id()
    return {"name": flow_run.get_name(), "id": run_id, "url": url_for("flow-run", obj_id=run_id) if run_id else None}


def run_pipeline(name: str, config: C, body: Callable[[Pipeline, C], None]) -> State:
    """Run `body` (which calls `pipeline.stage`) and turn the outcome into the flow's final state. Policy weights
    named by a URL are fetched and verified first (stage policy_fetch): `body` gets the config with local paths."""
    pipeline = Pipeline(name, config)
    if pipeline.result.status != FAILED:
        try:
            if urls := weight_urls(config):
                cache = str(Path(config.output_dir).absolute() / "fetched")
                fetched = pipeline.stage("policy_fetch", fetch_weights_task, urls, cache)
                pipeline.result.outputs["fetched"] = fetched
                config = localized(config, fetched)
            body(pipeline, config)
        except StageFailed:
            pass
        except (KeyboardInterrupt, TerminationSignal) as exc:  # a signal between two stages
            pipeline.stop("orchestration", exc)
    return pipeline.finish()


def task_runner_for(config: DAFConfig) -> TaskRunner:
    """Threads (default), processes, or a Dask cluster, bounded by max_parallel_jobs."""
    if config.task_runner == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=config.max_parallel_jobs)
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if config.dask_address:  # checked by the environment validation; again here, where it is used
            return DaskTaskRunner(address=check_dask_address(config.dask_address))
        return DaskTaskRunner(cluster_kwargs={"n_workers": config.max_parallel_jobs, "threads_per_worker": 1})
    return ThreadPoolTaskRunner(max_workers=config.max_parallel_jobs)


def run_on_configured_runner(
    task: Task,
    calls: list[dict[str, Any]],
    config: DAFConfig,
    parallel: bool,
    on_done: Callable[[dict[str, Any], State], None] | None = None,
) -> list:
    """`task(**call)` for every call, in order, on the runner `config` names: at most `max_parallel_jobs` task
    runs in flight when `parallel`, else one at a time. `on_done(call, final_state)` follows each result, in order.

    The runner is chosen here, inside the flow run, rather than on the flow: a deployment run started by a worker
    calls the flow function itself, so a runner applied by a Python wrapper (`flow.with_options`) would not reach
    it. The window of in-flight futures bounds runners that have no worker limit of their own (a Dask cluster).
    """
    window = config.max_parallel_jobs if parallel else 1
    results: list = []

    def collect(call: dict[str, Any], result: Any, state: State) -> None:
        results.append(result)
        if on_done is not None:
            on_done(call, state)

    if config.task_runner == "thread" and window == 1:  # nothing runs beside it: no runner, no thread hop
        for call in calls:
            state = task(**call, return_state=True)
            collect(call, state.result(), state)
        return results
    in_flight: deque = deque()
    with task_runner_for(config) as runner:
        for call in calls:
            if len(in_flight) >= window:
                done_call, future = in_flight.popleft()
                collect(done_call, future.result(), future.state)
            in_flight.append((call, runner.submit(task, parameters=call)))
        for done_call, future in in_flight:
            collect(done_call, future.result(), future.state)
    return results
