"""`daf package` (build a policy bundle and validate it) and `daf validate-package` (validate a bundle the way a
tournament would load it). Exit 0 valid, 1 invalid, 2 bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from daf.cli.application import stdout_console
from daf.cli.exits import EXIT_FAILED, BadInput, errors_as_exit_codes, exit_with
from daf.cli.input_checks import check_missions
from daf.cli.options import DEFAULT_MISSION, DEFAULT_OUTPUT_DIR, MissionsOpt
from daf.cli.rendering import show_bundle_checks, show_outputs
from daf.config import MAX_EPISODES

if TYPE_CHECKING:
    from daf.packaging import ValidationReport


def _exit_unless_valid(report: ValidationReport) -> None:
    if not report.ok:
        exit_with(EXIT_FAILED, "; ".join(report.errors) or "no check passed")


def package(
    policy: Annotated[str, typer.Argument(help="Policy name or class path (e.g. baseline, lstm, pkg.MyPolicy).")],
    data_path: Annotated[str | None, typer.Option("--data-path", help="Weights file to bundle.")] = None,
    output_dir: Annotated[
        str, typer.Option("--output-dir", help="Where <name>.zip goes.")
    ] = f"{DEFAULT_OUTPUT_DIR}/packages",
    name: Annotated[str | None, typer.Option("--name", help="Bundle name (default: the class name).")] = None,
    mission: MissionsOpt = None,
) -> None:
    """Build a policy bundle (zip) and validate it on its missions. Exit 0 valid, 1 invalid, 2 bad input."""
    with errors_as_exit_codes():
        missions = mission or [DEFAULT_MISSION]
        check_missions(missions)
        from mettagrid.policy.policy import PolicySpec

        from daf.packaging import build_package, validate_package

        path = build_package(
            PolicySpec(class_path=policy, data_path=data_path), output_dir, name=name, missions=missions
        )
        report = validate_package(path, missions=missions)
        out = stdout_console()
        show_bundle_checks(report, out)
        show_outputs({"deployment_package": str(path)}, out)
    _exit_unless_valid(report)


def validate_package_command(
    path: Annotated[Path, typer.Argument(help="Bundle zip to check.")],
    mission: MissionsOpt = None,
    reward_threshold: Annotated[
        float | None, typer.Option("--reward-threshold", help="Also require this mean reward per mission.")
    ] = None,
    eval_episodes: Annotated[int, typer.Option("--eval-episodes", min=1, max=MAX_EPISODES)] = 5,
) -> None:
    """Validate a bundle the way a tournament would load it. Exit 0 valid, 1 invalid, 2 bad input."""
    with errors_as_exit_codes():
        if not path.is_file():
            raise BadInput(f"{path}: bundle not found")
        if reward_threshold is not None and not math.isfinite(reward_threshold):
            raise BadInput(f"--reward-threshold {reward_threshold}: a threshold is a finite mean reward")
        if mission:
            check_missions(mission)
        from daf.packaging import validate_package

        report = validate_package(
            path, missions=mission, reward_threshold=reward_threshold, eval_episodes=eval_episodes
        )
        show_bundle_checks(report, stdout_console())
    _exit_unless_valid(report)
