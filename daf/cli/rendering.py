"""How results look on stdout: a pipeline's result (stages, errors, outputs, leaderboard, evaluations, best
config), the check tables of `daf check` and of bundle validation, and the `daf evaluate` table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from daf.jsonable import to_jsonable
from daf.results import FAILED, PARTIAL, SUCCESS, PipelineResult

if TYPE_CHECKING:
    from daf.environment_checks import EnvironmentReport
    from daf.evaluation import EvaluationResult
    from daf.packaging import ValidationReport

# Outputs worth pointing the user at, in the order they are shown.
OUTPUT_KEYS = (
    "report_html",
    "report_markdown",
    "report_json",
    "deployment_package",
    "final_checkpoint",
    "best_checkpoint",
    "checkpoint_dir",
    "run_dir",
    "result_path",
)
STATUS_STYLES = {SUCCESS: "green", PARTIAL: "yellow", FAILED: "red"}


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def _abs(value: Any) -> str:
    return str(Path(value).resolve()) if isinstance(value, str) and value else str(value)


# ---------------------------------------------------------------------------------------------------------------------
# A pipeline's result


def show_result(result: PipelineResult, console: Console) -> None:
    """Status, stages, time, errors, output paths, and the leaderboard/evaluations/best config when present."""
    style = STATUS_STYLES.get(result.status, "white")
    table = Table(title=f"{result.pipeline_name} pipeline", title_justify="left")
    table.add_column("stage")
    table.add_column("status")
    for stage in result.stages_completed:
        table.add_row(escape(stage), "[green]completed[/]")
    for stage in result.stages_failed:
        table.add_row(escape(stage), "[red]failed[/]")
    console.print(table)
    console.print(f"status: [{style}]{result.status}[/]   time: {result.total_time_seconds:.1f}s")
    for error in result.errors:
        console.print(f"[red]error:[/] {escape(error)}", soft_wrap=True)
    show_outputs(result.outputs, console)
    _show_leaderboard(result.outputs, console)
    _show_evaluations(result.outputs.get("evaluation_results"), console)
    _show_best_config(result.outputs.get("best_config"), console)


def show_outputs(outputs: Mapping[str, Any], console: Console) -> None:
    """The `outputs:` section: the files and folders written (OUTPUT_KEYS), as absolute paths."""
    paths = [(k, outputs[k]) for k in OUTPUT_KEYS if outputs.get(k)]
    checkpoints = outputs.get("trained_checkpoints") or {}
    if not paths and not checkpoints:
        return
    console.print("outputs:")
    # Plain `key: path` lines (no table cells) so long paths are never wrapped and can be copied.
    for key, value in paths:
        console.print(f"  {key}: {escape(_abs(value))}", soft_wrap=True)
    for name, path in checkpoints.items():
        console.print(f"  trained_checkpoint[{escape(name)}]: {escape(_abs(path))}", soft_wrap=True)
    if stored := outputs.get("stored"):  # the copy in the result store, readable from other machines
        console.print(f"  stored in: {escape(stored['run'])}", soft_wrap=True)


def _show_leaderboard(outputs: dict[str, Any], console: Console) -> None:
    stats = outputs.get("summary_statistics") or outputs.get("statistics") or {}
    rows = stats.get("leaderboard") if isinstance(stats, dict) else None
    if not rows:
        return
    table = Table(title="leaderboard (mean total reward per episode, all missions)", title_justify="left")
    for column in ("rank", "policy", "mean", "95% CI", "better than next"):
        table.add_column(column)
    for row in rows:
        ci = f"[{_fmt(row.get('ci_low'))}, {_fmt(row.get('ci_high'))}]"
        better = {True: "yes", False: "no", None: "-"}.get(row.get("significantly_better_than_next"), "-")
        table.add_row(str(row.get("rank")), escape(str(row.get("policy"))), _fmt(row.get("mean")), escape(ci), better)
    console.print(table)


def _show_evaluations(evaluations: list[dict[str, Any]] | None, console: Console) -> None:
    if not evaluations:
        return
    table = Table(title="evaluation", title_justify="left")
    for column in ("policy", "mission", "episodes", "mean reward"):
        table.add_column(column)
    for ev in evaluations:
        table.add_row(
            escape(str(ev["policy"])), escape(str(ev["mission"])), str(ev["episodes"]), _fmt(ev["mean_reward"])
        )
    console.print(table)


def _show_best_config(best: Any, console: Console) -> None:
    if best is None:
        return
    console.print(f"best_config: {escape(json.dumps(to_jsonable(best), sort_keys=True))}", soft_wrap=True)


# ---------------------------------------------------------------------------------------------------------------------
# Check tables: the environment's and a bundle's


class NamedCheck(Protocol):
    """One row of a check table (daf.environment_checks.CheckResult, daf.packaging.Check)."""

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def message(self) -> str: ...


def _show_checks(
    console: Console,
    checks: Iterable[NamedCheck],
    colors: Mapping[str, str],
    title: str,
    title_justify: Literal["left", "center"] = "center",
) -> None:
    table = Table(title=title, title_justify=title_justify)
    for column in ("check", "status", "message"):
        table.add_column(column)
    for c in checks:
        table.add_row(escape(c.name), f"[{colors.get(c.status, 'white')}]{c.status}[/]", escape(c.message))
    console.print(table)


def show_environment(report: EnvironmentReport, console: Console) -> None:
    """`daf check`: every check, then healthy or not with the counts of errors and warnings."""
    from daf.environment_checks import ERROR, OK, WARNING

    _show_checks(console, report.checks, {OK: "green", WARNING: "yellow", ERROR: "red"}, "environment")
    console.print(
        f"environment: {'[green]healthy[/]' if report.is_healthy() else '[red]unhealthy[/]'} "
        f"({len(report.errors)} errors, {len(report.warnings)} warnings)"
    )


def show_bundle_checks(report: ValidationReport, console: Console) -> None:
    """Bundle validation: every check, then valid or INVALID."""
    from daf.packaging.validate import FAIL, PASS, SKIP

    colors = {PASS: "green", FAIL: "red", SKIP: "yellow"}
    _show_checks(console, report.checks, colors, f"bundle checks: {escape(report.path)}", "left")
    console.print(f"bundle: {'[green]valid[/]' if report.ok else '[red]INVALID[/]'}")


# ---------------------------------------------------------------------------------------------------------------------
# `daf evaluate`


def show_policy_evaluation(results: list[EvaluationResult], seed: int, console: Console) -> None:
    """One policy's evaluation: per mission, episodes, mean reward with its bootstrap 95% CI, throughput."""
    import numpy as np

    from daf.stats import StatsConfig, bootstrap_mean_ci

    table = Table(title=f"evaluation of {escape(results[0].policy_name)}", title_justify="left")
    for column in ("mission", "episodes", "mean reward", "95% CI", "agent-steps/s"):
        table.add_column(column)
    for r in results:
        rewards = np.asarray(r.rewards, dtype=float)
        low, high = bootstrap_mean_ci(rewards, StatsConfig(seed=seed), np.random.default_rng(seed))
        table.add_row(
            escape(r.mission),
            str(len(rewards)),
            _fmt(float(rewards.mean())),
            escape(f"[{_fmt(low)}, {_fmt(high)}]"),
            f"{r.agent_steps_per_second:.0f}",
        )
    console.print(table)
    for r in results:
        if r.invalid_actions:
            console.print(
                f"[bold red]warning:[/] {escape(r.policy_name)} chose {r.invalid_actions} of {r.agent_steps} actions "
                f"on {escape(r.mission)} that are no action of the mission: its rewards do not measure a working policy"
            )
