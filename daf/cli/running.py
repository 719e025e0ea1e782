"""Running one pipeline from a command: progress on stderr while it runs, its result on stdout, its exit code."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from daf.cli.application import OPTIONS, stderr_console, stdout_console
from daf.cli.exits import exit_for, exit_with
from daf.cli.progress import pipeline_progress
from daf.cli.rendering import show_result
from daf.interrupts import Interrupted, stop_on_signals
from daf.results import PipelineResult


def run_with_progress(name: str, orchestrate: Callable[[], PipelineResult]) -> NoReturn:
    """Run an orchestrator with progress on stderr, print its result on stdout, exit with its code."""
    from prefect.settings import PREFECT_API_URL

    err = stderr_console()
    if not PREFECT_API_URL.value():
        err.print(f"running the {name} pipeline (Prefect starts its embedded server first, ~20 s)", markup=False)
    # Around the orchestrator's own handler too, and kept after a stop until the process exits: a second signal
    # while the result is shown or the embedded server stops still stops at once (daf/interrupts.py).
    with stop_on_signals(keep_after_stop=True):
        try:
            with pipeline_progress(err, name, verbose=OPTIONS.verbose):
                result = orchestrate()
        except Interrupted as stop:  # SIGINT/SIGTERM: the result was written; exit 130/143
            if isinstance(stop.result, PipelineResult):
                show_result(stop.result, stdout_console())
                message = "; ".join(stop.result.errors)
            else:
                message = str(stop)
            exit_with(stop.exit_code, message)
        show_result(result, stdout_console())
        exit_for(result)
