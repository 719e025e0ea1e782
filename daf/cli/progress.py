"""The CLI's progress display for pipelines that run as Prefect flows.

The flows take no callbacks: what they tell the outside world are Prefect log records, and DAF's tasks and flows
attach a progress event (daf.events) to the records that report progress (training every 10 %, each finished
sweep trial, each finished evaluation, notes such as a reused cached result). `PipelineProgress` is a logging
handler that reads those events, never the message text, and draws rich progress bars on a terminal, or prints
plain progress lines when output is not a terminal (CI logs, pipes), so the user sees progress either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from daf.events import LOG_RECORD_FIELD, EvaluationFinished, StageNote, TrainingProgress, TrialFinished

PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _QuietPrefectInfo(logging.Filter):
    """Drops Prefect's INFO chatter from console handlers; warnings and errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("prefect")


class PipelineProgress(logging.Handler):
    """Rich bars (terminal) or progress lines (otherwise) for training steps, evaluation episodes, sweep trials."""

    def __init__(self, console: Console) -> None:
        super().__init__(level=logging.INFO)
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._bars: dict[str, TaskID] = {}
        self._started = time.perf_counter()

    # -- bars -------------------------------------------------------------------------------------------------------

    def _bar(self, key: str, description: str, total: float | None) -> TaskID:
        if key not in self._bars:
            self._bars[key] = self.progress.add_task(escape(description), total=total, info="")
        return self._bars[key]

    def _update(self, key: str, description: str, completed: float, total: float | None, info: str = "") -> None:
        bar = self._bar(key, description, total)
        self.progress.update(bar, completed=completed, total=total, info=escape(info))

    def _line(self, text: str) -> None:
        # Not a terminal: one plain line per event, prefixed with the elapsed time.
        elapsed = time.perf_counter() - self._started
        self.console.print(f"[{elapsed:6.1f}s] {text}", markup=False, highlight=False, soft_wrap=True)

    # -- log records ------------------------------------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._handle(record)
        except Exception:  # progress display must never break a pipeline
            self.handleError(record)

    def _handle(self, record: logging.LogRecord) -> None:
        event = getattr(record, LOG_RECORD_FIELD, None)
        task_run = str(getattr(record, "task_run_name", "") or "")
        if isinstance(event, TrainingProgress):
            self._training(task_run, event)
        elif isinstance(event, TrialFinished):
            self._trial(event)
        elif isinstance(event, EvaluationFinished):
            self._evaluation(event)
        elif isinstance(event, StageNote):
            self._note(event.text)

    def _note(self, text: str) -> None:
        if self.live:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            self._line(text)

    def _training(self, task_run: str, event: TrainingProgress) -> None:
        step, total = event.step, event.total_steps
        info = f"{event.agent_steps_per_second:.0f} agent-steps/s, episode reward {event.reward_text}"
        if self.live:
            self._update(f"train:{task_run}", "training (agent-steps)", step, total, info)
        else:
            self._line(f"training: step {step}/{total} ({100 * step / total:.0f}%)  {info}")

    def _trial(self, event: TrialFinished) -> None:
        info = f"last: trial {event.number} {event.state} value={event.value}"
        if self.live:
            self._update("sweep", "sweep trials", event.completed, event.total, info)
        else:
            self._line(
                f"sweep: trial {event.number} {event.state} value={event.value} ({event.completed}/{event.total})"
            )

    def _evaluation(self, event: EvaluationFinished) -> None:
        episodes, total = event.completed * event.episodes, event.total * event.episodes
        info = f"{event.completed} (policy, mission) pairs"
        if self.live:
            self._update("eval", "evaluation (episodes)", episodes, total, info)
        else:
            reused = ", cached result reused" if event.reused else ""
            self._line(f"evaluation: {episodes}/{total} episodes done ({event.policy} on {event.mission}{reused})")


@contextmanager
def pipeline_progress(console: Console, pipeline: str, *, verbose: bool = False) -> Iterator[None]:
    """Show progress while a flow runs; with `verbose`, Prefect's own INFO log lines are the progress instead."""
    if verbose:
        yield
        return
    # Importing prefect configures its logging (dictConfig replaces handlers), so it must happen before we attach.
    import prefect.main  # noqa: F401  (prefect.__init__ is lazy; prefect.main runs setup_logging)

    handler = PipelineProgress(console)
    loggers = [logging.getLogger(name) for name in PREFECT_RUN_LOGGERS]
    quiet = _QuietPrefectInfo()
    console_handlers = _console_handlers()
    for h in console_handlers:
        h.addFilter(quiet)
    for lg in loggers:
        lg.addHandler(handler)
    overall = None
    if handler.live:
        handler.progress.start()
        overall = handler.progress.add_task(f"{pipeline} pipeline", total=None, info="running")
    try:
        yield
    finally:
        if overall is not None:
            handler.progress.update(overall, total=1, completed=1, info="done")
            handler.progress.stop()
        for lg in loggers:
            lg.removeHandler(handler)
        for h in console_handlers:
            h.removeFilter(quiet)


def _console_handlers() -> list[logging.Handler]:
    """Stream handlers that would print Prefect records: the root logger's and the `prefect` logger's."""
    found: list[logging.Handler] = []
    for name in (None, "prefect"):
        for h in logging.getLogger(name).handlers:
            if isinstance(h, logging.StreamHandler) and h not in found:
                found.append(h)
    return found
