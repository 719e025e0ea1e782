"""The Typer application `daf`: its global options (--debug, --verbose) and the consoles commands print to."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.console import Console

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


def stdout_console() -> Console:
    """Results: tables and output paths."""
    # Created per call so CliRunner's captured streams are used; wide when not a terminal so paths stay whole.
    return Console(width=None if sys.stdout.isatty() else 160, highlight=False)


def stderr_console() -> Console:
    """Progress and notes beside the results."""
    return Console(stderr=True, width=None if sys.stderr.isatty() else 160, highlight=False)
