"""The Typer application `daf`: its global options (--debug, --verbose) and the consoles commands print to."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.console import Console
from rich.segment import Segment

from daf.text import printable

EXIT_CODES_HELP = (
    "Exit codes: 0 success, 1 pipeline failed, 2 bad input/config, 3 partial (an optional stage failed), "
    "130 stopped by SIGINT, 143 stopped by SIGTERM."
)

app = typer.Typer(
    name="daf",
    help=f"Train, evaluate, sweep, compare and package multi-agent RL policies on mettagrid. {EXIT_CODES_HELP}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # errors are handled by daf.cli.exits: one line, or a traceback with --debug
    add_completion=False,
)


@dataclass
class GlobalOptions:
    """What the options before the command name chose, for the commands to read."""

    debug: bool = False
    verbose: bool = False


OPTIONS = GlobalOptions()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Prefect's own INFO log lines instead of progress bars.")
    ] = False,
) -> None:
    """DAF command line. Exit codes: 0 success, 1 failed, 2 bad input/config, 3 partial."""
    OPTIONS.debug = debug
    OPTIONS.verbose = verbose


class PrintableConsole(Console):
    """A Rich console that shows control characters in the text it prints instead of sending them to the terminal
    (daf.text): policy names, missions, paths, bundle entries and messages reach tables, progress bars and lines
    from many places, and this is the one place they all pass. Rich's own styles and cursor moves are not text."""

    # Rich has no public hook between its renderables and the terminal; its buffer of (text, style, control)
    # segments is where text is still apart from the escape sequences Rich adds (tests/pipelines/test_honest_output.py
    # fails if that changes).
    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            segment if segment.control else Segment(printable(segment.text), segment.style) for segment in buffer
        )


def stdout_console() -> Console:
    """Results: tables and output paths."""
    # Created per call so CliRunner's captured streams are used; wide when not a terminal so paths stay whole.
    return PrintableConsole(width=None if sys.stdout.isatty() else 160, highlight=False)


def stderr_console() -> Console:
    """Progress and notes beside the results."""
    return PrintableConsole(stderr=True, width=None if sys.stderr.isatty() else 160, highlight=False)
