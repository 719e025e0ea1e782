"""Terminal progress for pipelines that run as Prefect flows.

The flows take no callbacks: what they tell the outside world are Prefect log records (training logs
`step X/Y ... agent-steps/s ... episode reward R` every 10 %, the sweep logs `trial N STATE value=V (done/total)`,
and every task run logs `Finished in state ...`). `PipelineProgress` is a logging handler that turns those
records into rich progress bars on a terminal, or into plain progress lines when output is not a terminal
(CI logs, pipes), so the user sees progress either way.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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

_STEP = re.compile(r"step (\d+)/(\d+)\s+(\d+) agent-steps/s\s+episode reward (\S+)")
_TRIAL = re.compile(r"trial (\S+) (\S+) value=(\S+) \((\S+)/(\S+)\)")
_FINISHED = re.compile(r"Finished in state (\w+)")
PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _QuietPrefectInfo(logging.Filter):
    """Drops Prefect's INFO chatter from console handlers; warnings and errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("prefect")


class PipelineProgress(logging.Handler):
    """Rich bars (terminal) or progress lines (otherwise) for training steps, evaluation episodes, sweep trials."""

    def __init__(
        self,
        console: Console,
        pipeline: str,
        *,
        evaluations: int | None = None,
        episodes_per_evaluation: int = 1,
        trials: int | None = None,
    ) -> None:
        super().__init__(level=logging.INFO)
        self.console = console
        self.live = console.is_terminal
        self.pipeline = pipeline
        self.episodes_per_evaluation = episodes_per_evaluation
        self.evaluations_total = evaluations
        self.evaluations_done = 0
        self.trials_total = trials
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
        message = record.getMessage()
        task_run = str(getattr(record, "task_run_name", "") or "")
        if match := _STEP.search(message):
            self._training(task_run, match)
        elif match := _TRIAL.search(message):
            self._trial(match)
        elif task_run and (match := _FINISHED.search(message)):
            self._task_finished(task_run, match.group(1))
        elif record.name == "prefect.flow_runs" and message.startswith("Beginning flow run"):
            flow_run = getattr(record, "flow_run_name", "?")
            self._note(f"Prefect flow run '{flow_run}' started ({self.pipeline})")

    def _note(self, text: str) -> None:
        if self.live:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            self._line(text)

    def _task_finished(self, task_run: str, state: str) -> None:
        if task_run.startswith("evaluation"):
            self._evaluation(task_run, state)
        elif state != "Completed":  # a reused cached result or a failure explains a missing or short bar
            self._note(f"task run {task_run}: {state}")

    def _training(self, task_run: str, match: re.Match[str]) -> None:
        step, total, sps, reward = int(match.group(1)), int(match.group(2)), match.group(3), match.group(4)
        info = f"{sps} agent-steps/s, episode reward {reward}"
        if self.live:
            self._update(f"train:{task_run}", "training (agent-steps)", step, total, info)
        else:
            self._line(f"training: step {step}/{total} ({100 * step / total:.0f}%)  {info}")

    def _trial(self, match: re.Match[str]) -> None:
        number, state, value, done, total = match.groups()
        done_n = int(done) if done.isdigit() else 0
        total_n = int(total) if total.isdigit() else self.trials_total
        info = f"last: trial {number} {state} value={value}"
        if self.live:
            self._update("sweep", "sweep trials", done_n, total_n, info)
        else:
            self._line(f"sweep: trial {number} {state} value={value} ({done}/{total})")

    def _evaluation(self, task_run: str, state: str) -> None:
        self.evaluations_done += 1
        episodes = self.evaluations_done * self.episodes_per_evaluation
        total = self.evaluations_total * self.episodes_per_evaluation if self.evaluations_total else None
        info = f"{self.evaluations_done} (policy, mission) pairs"
        if self.live:
            self._update("eval", "evaluation (episodes)", episodes, total, info)
        else:
            shown = f"{episodes}/{total}" if total else str(episodes)
            self._line(f"evaluation: {shown} episodes done ({task_run}: {state})")


@contextmanager
def pipeline_progress(console: Console, pipeline: str, *, verbose: bool = False, **totals: Any) -> Iterator[None]:
    """Show progress while a flow runs; with `verbose`, Prefect's own INFO log lines are the progress instead."""
    if verbose:
        yield
        return
    # Importing prefect configures its logging (dictConfig replaces handlers), so it must happen before we attach.
    import prefect.main  # noqa: F401  (prefect.__init__ is lazy; prefect.main runs setup_logging)

    handler = PipelineProgress(console, pipeline, **totals)
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
