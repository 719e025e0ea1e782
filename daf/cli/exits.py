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
from daf.input_limits import InputTooLarge
from daf.results import INVALID_INPUT, PARTIAL, SUCCESS, PipelineResult

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_PARTIAL = 0, 1, 2, 3


class BadInput(ValueError):
    """The user's input (config, flag, name) is wrong: exit code 2."""


def exit_with(code: int, message: str | None = None) -> NoReturn:
    """Exit with `code`, after `error: <message>` on stderr when there is a message."""
    if message:
        # One line: multi-line messages (several config errors, YAML context) are joined.
        one_line = "; ".join(part.strip() for part in message.splitlines() if part.strip())
        typer.echo(f"error: {one_line}", err=True)
    raise typer.Exit(code)


def _is_bad_input(exc: Exception) -> bool:
    """An error DAF raises about what it was given (checked before compute): exit 2 with its one-line message.

    The kinds a flag or a config file raises are tested first: the other kinds live in modules that load torch
    and mettagrid, imported only for an error that is none of the first.
    """
    from daf.config import ConfigError

    if isinstance(exc, (BadInput, InputTooLarge, ConfigError)):
        return True
    from daf.comparison import ComparisonError
    from daf.missions import UnknownMissionError
    from daf.packaging import PackagingError
    from daf.policies.neural import CheckpointError
    from daf.policies.registry import PolicyResolutionError
    from daf.sweeps import SweepError
    from daf.training.ppo import TrainingError

    bad_input = (
        UnknownMissionError, PolicyResolutionError, PackagingError, ComparisonError, CheckpointError, TrainingError,
        SweepError,
    )  # fmt: skip
    return isinstance(exc, bad_input)


@contextmanager
def errors_as_exit_codes() -> Iterator[None]:
    """Map exceptions onto exit codes: bad input -> 2 (one line), anything unexpected -> 1."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # the CLI's last line of defence: every error becomes an exit code
        if _is_bad_input(exc):
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
