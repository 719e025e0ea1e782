"""The commands' options, each declared once, and `pipeline_command`, which gives every pipeline command the
options they share (--config, --output-dir, --device, --seed, --set) so that a command declares only its own."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from daf.cli.configs import ConfigT, load_config
from daf.cli.exits import errors_as_exit_codes

# DAFConfig.output_dir's default, for the commands that run without a config (daf.config is not imported for
# `daf --help`; tests/pipelines/test_cli.py checks the two agree).
DEFAULT_OUTPUT_DIR = "daf_output"
# The mission of the commands that evaluate a policy when given none.
DEFAULT_MISSION = "training_facility_1"

MissionsOpt = Annotated[list[str] | None, typer.Option("--mission", "-m", help="Mission name or YAML (repeatable).")]
EpisodesOpt = Annotated[int | None, typer.Option("--episodes", "-n", help="Episodes per mission.")]
ParallelOpt = Annotated[bool | None, typer.Option("--parallel/--sequential", help="Evaluate concurrently.")]

_OutputDirOpt = Annotated[str | None, typer.Option("--output-dir", help="Where runs, reports and checkpoints go.")]
_DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")]
_SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
_SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override any config field: KEY=VALUE (repeatable; a.b for nested).")
]


def _option(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def config_option(help: str = "YAML config file.", *, required: bool = False) -> inspect.Parameter:
    """A pipeline command's --config (-c): optional unless `required` (a sweep has no search space without one)."""
    if required:
        return _option("config", Annotated[Path, typer.Option("--config", "-c", help=help)], inspect.Parameter.empty)
    return _option("config", Annotated[Path | None, typer.Option("--config", "-c", help=help)])


# Shown after the command's own options, in this order.
_TRAILING = (
    _option("output_dir", _OutputDirOpt),
    _option("device", _DeviceOpt),
    _option("seed", _SeedOpt),
    _option("set_", _SetOpt),
)


@dataclass(frozen=True)
class PipelineOptions:
    """The options every pipeline command takes, handed to the command as one value."""

    config: Path | None
    output_dir: str | None
    device: str | None
    seed: int | None
    sets: list[str] | None

    def load(self, model: type[ConfigT], **flags: Any) -> ConfigT:
        """The command's config: the --config file, then its flags and these options (None: not given), then --set."""
        shared = {"output_dir": self.output_dir, "device": self.device, "seed": self.seed}
        return load_config(model, self.config, {**flags, **shared}, self.sets)


def pipeline_command(
    *, partial_when: str, config: inspect.Parameter | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Turn `command(options: PipelineOptions, **own_options)` into a Typer command that also takes the shared
    options (`config`: its --config, by default an optional one), with errors mapped onto exit codes, and whose
    help ends with those codes (`partial_when`: an example of a partial result).

    Typer reads a command's options from its signature, so the wrapper's signature is the command's own options
    between --config and the trailing shared ones.
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]  # all but `options`
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

        @functools.wraps(command)
        def run(**given: Any) -> None:
            options = PipelineOptions(
                config=given.pop("config"),
                output_dir=given.pop("output_dir"),
                device=given.pop("device"),
                seed=given.pop("seed"),
                sets=given.pop("set_"),
            )
            with errors_as_exit_codes():
                command(options, **given)

        parameters = [config or config_option(), *own, *_TRAILING]
        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__doc__ = (
            f"{inspect.cleandoc(command.__doc__ or '')}\n\n"
            f"Exit codes: 0 success, 1 failed, 2 bad input/config, 3 partial (e.g. {partial_when})."
        )
        return run

    return decorate
