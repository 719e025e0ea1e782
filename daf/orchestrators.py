"""The seed's public API: four orchestrators, each running a Prefect flow and returning a PipelineResult.

The entry layer: it validates arguments into a config (daf.config), calls the pipeline's flow (daf.flows) and
returns the flow's PipelineResult; nothing below it imports it.

They never raise for a stage failure; invalid arguments give a failed result whose error names the argument.
SIGINT or SIGTERM stops a pipeline at the next safe point: its result (status failed, the error naming the signal)
is written to the run directory, then daf.interrupts.Interrupted (a KeyboardInterrupt carrying that result) is raised.
Without PREFECT_API_URL, Prefect starts its embedded (ephemeral) server on first use.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import types
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    get_current_settings,
    temporary_settings,
)
from prefect.settings.models.flows import FlowsSettings
from prefect.states import State
from pydantic import ValidationError

from daf.config import (
    ConfigError,
    DAFBenchmarkConfig,
    DAFComparisonConfig,
    DAFConfig,
    DAFSweepConfig,
    DAFTrainingConfig,
    format_validation_error,
)
from daf.flows.benchmark import benchmark_flow
from daf.flows.common import PipelineFailed
from daf.flows.comparison import comparison_flow
from daf.flows.sweep import sweep_flow
from daf.flows.training import training_flow
from daf.interrupts import Interrupted, stop_on_signals
from daf.results import FAILED, INVALID_INPUT, ORCHESTRATION, PipelineResult
from daf.tasks.common import quiet_run_logs

FlowFn = Callable[..., State]


def _invalid(pipeline: str, message: str) -> PipelineResult:
    return PipelineResult(
        pipeline_name=pipeline,
        status=FAILED,
        stages_failed=["environment_validation"],
        errors=[f"environment_validation: invalid arguments: {message}"],
        timestamp=datetime.now(),
        error_kind=INVALID_INPUT,
    )


def _build(model: type, pipeline: str, config: DAFConfig | None, arguments: dict[str, Any]):
    """A validated pipeline config from a base config and keyword arguments (None means 'not given')."""
    base: dict[str, Any] = {}
    # Only what the caller set, so that the arguments override it field by field.
    if isinstance(config, model):
        base = config.model_dump(exclude_unset=True)
    elif isinstance(config, DAFConfig):
        base = {k: v for k, v in config.model_dump(exclude_unset=True).items() if k in DAFConfig.model_fields}
    elif config is not None:
        raise ConfigError(f"config: expected {model.__name__} or DAFConfig, got {type(config).__name__}")
    given = {k: v for k, v in arguments.items() if v is not None}
    if "policies" in given:
        from daf.comparison import as_entry

        try:
            given["policies"] = [as_entry(p) for p in given["policies"]]
        except (ValidationError, ValueError) as exc:
            raise ConfigError(f"policies: {exc}") from None
    try:
        return model.model_validate({**base, **given})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "argument", model)) from None


def _start(
    model: type, flow_fn: FlowFn, pipeline: str, config: DAFConfig | None, arguments: dict[str, Any], *extra: Any
) -> PipelineResult:
    """Validate the arguments into `model`, then run the pipeline's flow."""
    try:
        cfg = _build(model, pipeline, config, arguments)
    except ConfigError as exc:
        return _invalid(pipeline, str(exc))
    return _run(flow_fn, pipeline, cfg, *extra)


@contextlib.contextmanager
def _in_process_settings() -> Iterator[None]:
    """Prefect settings for a flow run in the caller's process, for the call only (importing DAF sets nothing).
    A value the user set in the environment or the profile is kept.

    - No anonymous usage analytics from the embedded server.
    - At least 60 s for the embedded server to start: cold starts on 2 cores come close to Prefect's 20 s default.
    - No flow-run heartbeats (see `_heartbeats_off`).

    The embedded server, if this call starts it, runs in a process group of its own (`_keep_server_out_of_the_
    terminals_group`): Ctrl-C in a terminal stops the pipeline, not the server it still has to report to.
    """
    _keep_server_out_of_the_terminals_group()
    current = get_current_settings()
    updates: dict[Any, Any] = {}
    if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = max(
            60, current.server.ephemeral.startup_timeout_seconds
        )
    if _heartbeats_off(current):
        updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    with temporary_settings(updates):
        yield


class _SubprocessInOwnGroup(types.ModuleType):
    """`subprocess` as Prefect's server module sees it: the same, except that Popen starts a process group."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen:  # noqa: N802  (it stands in for subprocess.Popen)
        kwargs.setdefault("process_group", 0)
        return subprocess.Popen(*args, **kwargs)


def _keep_server_out_of_the_terminals_group() -> None:
    """Every embedded server Prefect starts from now on starts in a process group of its own (idempotent).

    Ctrl-C in a terminal sends SIGINT to the whole foreground process group. Prefect starts its embedded server (a
    uvicorn child) in the caller's group, so the first Ctrl-C also ended the server, and DAF, stopping at its next
    safe point, retried the dead server for minutes to record the stop (a ConnectError and exit 1, not 130). In a
    group of its own the server never sees the terminal's signals: DAF stops as for a signal to its PID alone, and
    Prefect stops the server when DAF exits, as it always has. Only Prefect's server module sees the change (its
    only child processes are the servers); Prefect has no setting for how it starts them.
    """
    if get_current_settings().api.url:  # a server of the user's own: none is started here
        return
    from prefect.server.api import server as prefect_server  # here: importing it configures Prefect's logging

    if not isinstance(prefect_server.subprocess, _SubprocessInOwnGroup):
        prefect_server.subprocess = _SubprocessInOwnGroup("subprocess")


def _heartbeats_off(current: Any) -> bool:
    """No flow-run heartbeats for a run in the caller's process, unless the user configured them.

    Heartbeats let a server automation mark runs of a dead worker as crashed; here the caller's own process
    runs the flow and sees any crash. They cost up to a second per run: Prefect's heartbeat thread sleeps in
    1 s steps and the run waits for it to notice the end (a third of a cached comparison re-run, measured by
    bench/orchestration_overhead.py). Deployments run on workers keep them. A heartbeat frequency set in the
    environment or the profile (other than Prefect's default) is respected.
    """
    variables = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")
    chosen = any(name in os.environ for name in variables)
    return not chosen and current.flows.heartbeat_frequency == FlowsSettings.model_fields["heartbeat_frequency"].default


def _run(flow_fn: FlowFn, pipeline: str, cfg: DAFConfig, *args: Any) -> PipelineResult:
    started = time.perf_counter()
    quiet_run_logs()  # before the client's first request (the embedded server's health check), not only in the flow
    # SIGINT/SIGTERM stop the pipeline at the next safe point; its result is written, then Interrupted is raised
    # (daf/interrupts.py): a stopped pipeline does not return as if it had merely failed.
    with stop_on_signals(), _in_process_settings():
        state = flow_fn(cfg, *args, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, PipelineFailed):
        result = result.result
    if isinstance(result, PipelineResult):
        if stopped_by := result.outputs.get("interrupted_by"):
            raise Interrupted(signal.Signals[stopped_by], result)
        return result
    # The flow itself crashed outside any stage (e.g. the engine lost its server).
    return PipelineResult(
        pipeline_name=pipeline,
        status=FAILED,
        stages_failed=["orchestration"],
        errors=[f"orchestration: {type(result).__name__}: {result}"],
        total_time_seconds=time.perf_counter() - started,
        error_kind=ORCHESTRATION,
    )


def daf_run_training_pipeline(
    policy_class_path: str | None = None,
    missions: list[str] | None = None,
    num_training_steps: int | None = None,
    eval_missions: list[str] | None = None,
    eval_episodes: int | None = None,
    config: DAFTrainingConfig | DAFConfig | None = None,
    **overrides: Any,
) -> PipelineResult:
    """Environment validation -> training -> checkpoint saving -> (optional) evaluation."""
    args = dict(
        policy_class_path=policy_class_path,
        missions=missions,
        num_training_steps=num_training_steps,
        eval_missions=eval_missions,
        eval_episodes=eval_episodes,
        **overrides,
    )
    return _start(DAFTrainingConfig, training_flow, "training", config, args)


def daf_run_sweep_pipeline(
    config: DAFSweepConfig | DAFConfig | None = None,
    compare_best: bool = False,
    comparison_episodes: int = 10,
    parallel_stages: bool = False,
    **overrides: Any,
) -> PipelineResult:
    """Environment validation -> sweep execution -> best config extraction -> (optional) comparison."""
    if not isinstance(config, DAFSweepConfig) and "search_space" not in overrides:
        got = type(config).__name__ if config is not None else "nothing"
        return _invalid("sweep", f"config: a sweep needs a DAFSweepConfig with a search_space (got {got})")
    if comparison_episodes < 1:
        return _invalid("sweep", f"comparison_episodes: must be >= 1, got {comparison_episodes}")
    extra = (compare_best, comparison_episodes, parallel_stages)
    return _start(DAFSweepConfig, sweep_flow, "sweep", config, overrides, *extra)


def daf_run_comparison_pipeline(
    policies: list[Any] | None = None,
    missions: list[str] | None = None,
    episodes_per_mission: int | None = None,
    parallel_evaluation: bool | None = None,
    config: DAFComparisonConfig | DAFConfig | None = None,
    **overrides: Any,
) -> PipelineResult:
    """Environment validation -> policy comparison -> statistical significance testing -> report generation."""
    args = dict(
        policies=policies,
        missions=missions,
        episodes_per_mission=episodes_per_mission,
        parallel_evaluation=parallel_evaluation,
        **overrides,
    )
    return _start(DAFComparisonConfig, comparison_flow, "comparison", config, args)


def daf_run_benchmark_pipeline(
    policies: list[Any] | None = None,
    missions: list[str] | None = None,
    episodes_per_mission: int | None = None,
    create_deployment_package: bool | None = None,
    config: DAFBenchmarkConfig | DAFConfig | None = None,
    **overrides: Any,
) -> PipelineResult:
    """Validation -> training (if no checkpoint) -> evaluation -> comparison with baselines -> deployment package."""
    args = dict(
        policies=policies,
        missions=missions,
        episodes_per_mission=episodes_per_mission,
        create_deployment_package=create_deployment_package,
        **overrides,
    )
    return _start(DAFBenchmarkConfig, benchmark_flow, "benchmark", config, args)
