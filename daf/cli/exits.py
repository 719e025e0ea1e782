"""Exit codes: what each outcome exits with, and the one `error:` line on stderr that says why.

Errors raised in the CLI's process map onto codes by their type (`errors_as_exit_codes`), a pipeline's result by
its error kind and status (`exit_for`), never by the wording of a message.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

from daf.cli.application import OPTIONS
from daf.errors import InputError
from daf.results import INVALID_INPUT, PARTIAL, SUCCESS, PipelineResult
from daf.text import printable

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_PARTIAL = 0, 1, 2, 3


class BadInput(InputError, ValueError):
    """The user's input (config, flag, name) is wrong: exit code 2."""


def exit_with(code: int, message: str | None = None) -> NoReturn:
    """Exit with `code`, after `error: <message>` on stderr when there is a message."""
    if message:
        # One line: multi-line messages (several config errors, YAML context) are joined.
        one_line = printable("; ".join(part.strip() for part in message.splitlines() if part.strip()))
        typer.echo(f"error: {one_line}", err=True)
    raise typer.Exit(code)


@contextmanager
def errors_as_exit_codes() -> Iterator[None]:
    """Map exceptions onto exit codes: bad input -> 2 (one line), anything unexpected -> 1."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # the CLI's last line of defence: every error becomes an exit code
        if isinstance(exc, InputError):  # about what DAF was given (daf.errors), checked before compute
            exit_with(EXIT_BAD_INPUT, str(exc))
        if OPTIONS.debug:
            traceback.print_exc()
        hint = "" if OPTIONS.debug else " (run with --debug for the traceback)"
        exit_with(EXIT_FAILED, f"unexpected {type(exc).__name__}: {exc}{hint}")


def exit_for(result: PipelineResult) -> NoReturn:
    """Exit code from the PipelineResult: its error kind (arguments refused: bad input), else its status."""
    if result.error_kind == INVALID_INPUT:
        exit_with(EXIT_BAD_INPUT, "; ".join(result.errors))
    if result.status == SUCCESS:
        raise typer.Exit(EXIT_OK)
    failed = ", ".join(result.stages_failed)
    if result.status == PARTIAL:
        exit_with(EXIT_PARTIAL, f"{result.pipeline_name} pipeline partial: failed optional stage(s): {failed}")
    exit_with(EXIT_FAILED, f"{result.pipeline_name} pipeline failed in stage(s): {failed or '?'}")
