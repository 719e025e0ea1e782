"""Mapping stage outcomes onto PipelineResult, and PipelineResult onto the flow run's final state.

status -> flow-run state:
  success -> Completed          (every stage ran)
  partial -> Completed, named "Partial"  (an optional stage failed; outputs of the others are kept)
  failed  -> Failed             (a required stage failed)
Either way the PipelineResult is the state's data and is saved as `pipeline_result.json` in the run directory.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from daf.config import DAFConfig
from daf.results import FAILED, PARTIAL, SUCCESS, PipelineResult
from tasks.artifacts import publish_pipeline_result

T = TypeVar("T")

# Prefect's HTTP client logs every request at INFO once mettagrid has put a handler on the root logger.
for _noisy in ("httpx", "httpcore"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


class StageFailed(Exception):
    """A required stage failed; the pipeline stops."""


def error_message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


class Pipeline:
    """Runs stages in order and records each outcome in a PipelineResult."""

    def __init__(self, name: str, config: DAFConfig):
        self.started = time.perf_counter()
        self.result = PipelineResult(pipeline_name=name, status=SUCCESS, timestamp=datetime.now())
        run_id = flow_run.get_id() or uuid.uuid4().hex
        stamp = self.result.timestamp.strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(config.output_dir) / "runs" / f"{name}-{stamp}-{run_id[:8]}"
        self.result.outputs["flow_run_id"] = str(run_id)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.run_dir = None
            self._record("environment_validation", f"output_dir {config.output_dir} is not writable: {exc}")
            self.result.status = FAILED
            return
        self.result.outputs["run_dir"] = str(self.run_dir)

    def stage(self, name: str, fn: Callable[..., T], *args: Any, required: bool = True, **kwargs: Any) -> T | None:
        started = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:  # every stage failure is recorded with its stage name, never swallowed
            self.fail(name, exc, required=required)
            return None
        finally:
            self.result.outputs.setdefault("stage_seconds", {})[name] = round(time.perf_counter() - started, 3)
        self.result.stages_completed.append(name)
        return out

    def _record(self, name: str, message: str) -> None:
        self.result.stages_failed.append(name)
        self.result.errors.append(f"{name}: {message}")

    def fail(self, name: str, exc: BaseException | str, required: bool = True) -> None:
        self._record(name, exc if isinstance(exc, str) else error_message(exc))
        if required:
            self.result.status = FAILED
            raise StageFailed(name)
        if self.result.status == SUCCESS:
            self.result.status = PARTIAL

    def finish(self) -> State:
        self.result.total_time_seconds = time.perf_counter() - self.started
        if self.run_dir is not None:
            path = self.run_dir / "pipeline_result.json"
            self.result.outputs["result_path"] = str(path)
            self.result.save(path)
        try:
            publish_pipeline_result(self.result)
        except Exception as exc:  # an unreachable UI must not change the pipeline's outcome
            logging.getLogger(__name__).warning("could not publish the result artifact: %s", exc)
        if self.result.status == FAILED:
            return Failed(message="; ".join(self.result.errors) or "failed", data=self.result)
        if self.result.status == PARTIAL:
            return Completed(message="; ".join(self.result.errors), data=self.result, name="Partial")
        return Completed(message="all stages succeeded", data=self.result)


def run_pipeline(name: str, config: DAFConfig, body: Callable[[Pipeline], None]) -> State:
    """Run `body` (which calls `pipeline.stage`) and turn the outcome into the flow's final state."""
    pipeline = Pipeline(name, config)
    if pipeline.result.status != FAILED:
        try:
            body(pipeline)
        except StageFailed:
            pass
    return pipeline.finish()


def task_runner_for(config: DAFConfig):
    """Threads (default), processes, or a Dask cluster, bounded by max_parallel_jobs."""
    if config.task_runner == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=config.max_parallel_jobs)
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if config.dask_address:
            return DaskTaskRunner(address=config.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": config.max_parallel_jobs, "threads_per_worker": 1})
    return ThreadPoolTaskRunner(max_workers=config.max_parallel_jobs)
