"""`daf`: the command line for DAF's pipelines (train, evaluate, compare, sweep, benchmark, package).

Pipeline commands (train, compare, sweep, benchmark) run through `daf.orchestrators`, so through Prefect flows:
without PREFECT_API_URL, Prefect starts its embedded server first (about 15-25 s). Each takes `--config PATH`
(YAML for the matching config class) and/or flags that override it; `--set KEY=VALUE` overrides any other field
(`--set learning_rate=3e-4`, `--set training.num_envs=8`). Results go to stdout (a table of the PipelineResult
and where the outputs went); progress, errors and Prefect warnings go to stderr.

Exit codes:
  0  success
  1  the pipeline failed (a required stage failed), the environment is unhealthy, a bundle is invalid,
     or an unexpected error (`--debug` shows its traceback)
  2  bad input: unreadable or invalid config, unknown mission or policy, a bad flag value
     (one `error: <message>` line on stderr, no traceback)
  3  partial: an optional stage failed; the other stages' outputs were written
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from daf.input_limits import InputTooLarge, load_yaml
from daf.interrupts import Interrupted, stop_on_signals

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_PARTIAL = 0, 1, 2, 3
EXIT_CODES_HELP = (
    "Exit codes: 0 success, 1 pipeline failed, 2 bad input/config, 3 partial (an optional stage failed), "
    "130 stopped by SIGINT, 143 stopped by SIGTERM."
)
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

M = TypeVar("M", bound=BaseModel)

app = typer.Typer(
    name="daf",
    help=f"Train, evaluate, sweep, compare and package multi-agent RL policies on mettagrid. {EXIT_CODES_HELP}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # errors are handled below: one line, or a traceback with --debug
    add_completion=False,
)


@dataclass
class _Options:
    debug: bool = False
    verbose: bool = False


OPTIONS = _Options()


class BadInput(ValueError):
    """The user's input (config, flag, name) is wrong: exit code 2."""


def _out() -> Console:
    # Created per call so CliRunner's captured streams are used; wide when not a terminal so paths stay whole.
    return Console(width=None if sys.stdout.isatty() else 160, highlight=False)


def _err() -> Console:
    return Console(stderr=True, width=None if sys.stderr.isatty() else 160, highlight=False)


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


# ---------------------------------------------------------------------------------------------------------------------
# Errors and exit codes


def _exit(code: int, message: str | None = None) -> None:
    if message:
        # One line: multi-line messages (several config errors, YAML context) are joined.
        one_line = "; ".join(part.strip() for part in message.splitlines() if part.strip())
        typer.echo(f"error: {one_line}", err=True)
    raise typer.Exit(code)


def _bad_input_types() -> tuple[type[BaseException], ...]:
    """Errors DAF raises about what it was given (checked before compute): exit 2 with their one-line message."""
    from daf.comparison import ComparisonError
    from daf.config import ConfigError
    from daf.missions import UnknownMissionError
    from daf.packaging import PackagingError
    from daf.policies.neural import CheckpointError
    from daf.policies.registry import PolicyResolutionError
    from daf.sweeps import SweepError
    from daf.training.ppo import TrainingError

    return (
        BadInput, ConfigError, InputTooLarge, UnknownMissionError, PolicyResolutionError, PackagingError,
        ComparisonError, CheckpointError, TrainingError, SweepError,
    )  # fmt: skip


@contextmanager
def _handled() -> Iterator[None]:
    """Map exceptions onto exit codes: bad input -> 2 (one line), anything unexpected -> 1."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # the CLI's last line of defence: every error becomes an exit code
        if isinstance(exc, _bad_input_types()):
            _exit(EXIT_BAD_INPUT, str(exc))
        if OPTIONS.debug:
            traceback.print_exc()
        hint = "" if OPTIONS.debug else " (run with --debug for the traceback)"
        _exit(EXIT_FAILED, f"unexpected {type(exc).__name__}: {exc}{hint}")


# ---------------------------------------------------------------------------------------------------------------------
# Configs: YAML file + flags + --set, validated by the config class


def _read_yaml(path: Path) -> dict[str, Any]:
    """The raw mapping of a config file (validated later, after flags are merged in)."""
    from daf.config import read_yaml_mapping

    return read_yaml_mapping(path)


def _apply_set(data: dict[str, Any], assignment: str) -> None:
    """`a.b=value`: the value is parsed as YAML (numbers, booleans, lists)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise BadInput(f"--set {assignment!r}: expected KEY=VALUE")
    try:
        value = load_yaml(raw, f"--set {key.strip()}")
    except InputTooLarge as exc:
        raise BadInput(str(exc)) from None
    except yaml.YAMLError:
        value = raw
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise BadInput(f"--set {assignment!r}: {part} is not a mapping")
    node[leaf] = value


def load_config(model: type[M], path: Path | None, flags: dict[str, Any], sets: list[str] | None = None) -> M:
    """File, then flags (None = not given), then --set."""
    data = _read_yaml(path) if path is not None else {}
    data.update({k: v for k, v in flags.items() if v is not None})
    for assignment in sets or []:
        _apply_set(data, assignment)
    return model.from_dict(data, source=str(path) if path else "options")  # type: ignore[attr-defined]


def parse_policy(text: str) -> dict[str, Any]:
    """`class_path`, `class_path:data_path` or `name=class_path[:data_path]` -> PolicyEntry fields."""
    name = None
    head, sep, rest = text.partition("=")
    if sep and "/" not in head and ":" not in head:
        name, text = head, rest
    class_path, _, data_path = text.partition(":")
    if not class_path:
        raise BadInput(f"--policy {text!r}: expected class_path, class_path:data_path or name=class_path:data_path")
    entry: dict[str, Any] = {"class_path": class_path, "data_path": data_path or None}
    if name:
        entry["name"] = name
    return entry


def check_missions(missions: list[str]) -> None:
    """Unknown missions are bad input (exit 2), caught before the Prefect server starts."""
    from daf.missions import get_mission

    for mission in missions:
        try:
            get_mission(mission)
        except ValueError as exc:
            raise BadInput(str(exc).splitlines()[0]) from None


def check_policies(entries: list[Any], *, trainable: bool = False) -> None:
    """Every policy imports (and its data file exists); names are unique; trainable if it will be trained."""
    from daf.comparison import display_names, to_spec
    from daf.policies.registry import TRAINABLE, check_spec, is_trainable

    for entry in entries:
        check_spec(to_spec(entry))
        if trainable and not is_trainable(entry.class_path):
            raise BadInput(f"policy {entry.class_path!r} is not trainable (trainable: {', '.join(sorted(TRAINABLE))})")
    display_names(entries)


# ---------------------------------------------------------------------------------------------------------------------
# Showing results


def _status_style(status: str) -> str:
    return {"success": "green", "partial": "yellow", "failed": "red"}.get(status, "white")


def _abs(value: Any) -> str:
    return str(Path(value).resolve()) if isinstance(value, str) and value else str(value)


def show_result(result: Any, console: Console) -> None:
    """Status, stages, time, errors, output paths, and the leaderboard/evaluations/best config when present."""
    style = _status_style(result.status)
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
    _show_outputs(result.outputs, console)
    _show_leaderboard(result.outputs, console)
    _show_evaluations(result.outputs.get("evaluation_results"), console)
    _show_best_config(result.outputs.get("best_config"), console)


def _show_outputs(outputs: dict[str, Any], console: Console) -> None:
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


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


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


def _show_evaluations(evaluations: list[dict] | None, console: Console) -> None:
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
    from daf.results import to_jsonable

    console.print(f"best_config: {escape(json.dumps(to_jsonable(best), sort_keys=True))}", soft_wrap=True)


def exit_for(result: Any) -> None:
    """Exit code from the PipelineResult: its error kind (arguments refused: bad input), else its status."""
    from daf.results import INVALID_INPUT

    if result.error_kind == INVALID_INPUT:
        _exit(EXIT_BAD_INPUT, "; ".join(result.errors))
    code = {"success": EXIT_OK, "partial": EXIT_PARTIAL}.get(result.status, EXIT_FAILED)
    if code == EXIT_FAILED:
        _exit(code, f"{result.pipeline_name} pipeline failed in stage(s): {', '.join(result.stages_failed) or '?'}")
    if code == EXIT_PARTIAL:
        _exit(
            code,
            f"{result.pipeline_name} pipeline partial: failed optional stage(s): {', '.join(result.stages_failed)}",
        )
    raise typer.Exit(code)


def run_pipeline(name: str, call: Callable[[], Any]) -> None:
    """Run an orchestrator with progress on stderr, print its result on stdout, exit with its code."""
    from prefect.settings import PREFECT_API_URL

    from daf.progress import pipeline_progress

    err = _err()
    if not PREFECT_API_URL.value():
        err.print(f"running the {name} pipeline (Prefect starts its embedded server first, ~20 s)", markup=False)
    # Around the orchestrator's own handler too, and kept after a stop until the process exits: a second signal
    # while the result is shown or the embedded server stops still stops at once (daf/interrupts.py).
    with stop_on_signals(keep_after_stop=True):
        try:
            with pipeline_progress(err, name, verbose=OPTIONS.verbose):
                result = call()
        except Interrupted as stop:  # SIGINT/SIGTERM: the result was written; exit 130/143
            if stop.result is not None:
                show_result(stop.result, _out())
                message = "; ".join(stop.result.errors)
            else:
                message = str(stop)
            _exit(stop.exit_code, message)
        show_result(result, _out())
        exit_for(result)


# ---------------------------------------------------------------------------------------------------------------------
# Option types shared by several commands

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
OutputDirOpt = Annotated[str | None, typer.Option("--output-dir", help="Where runs, reports and checkpoints go.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override any config field: KEY=VALUE (repeatable; a.b for nested).")
]
MissionsOpt = Annotated[list[str] | None, typer.Option("--mission", "-m", help="Mission name or YAML (repeatable).")]
ParallelOpt = Annotated[bool | None, typer.Option("--parallel/--sequential", help="Evaluate concurrently.")]


def _common(output_dir: str | None, device: str | None, seed: int | None) -> dict[str, Any]:
    return {"output_dir": output_dir, "device": device, "seed": seed}


# ---------------------------------------------------------------------------------------------------------------------
# Information commands


@app.command()
def missions() -> None:
    """List the missions: name, agents, map, objects, reward, max steps, description."""
    from daf.missions import MISSIONS

    table = Table(title="missions")
    for column in ("mission", "agents", "map", "objects", "reward", "max steps", "description"):
        table.add_column(column)
    for m in MISSIONS.values():
        objects = ", ".join(f"{k} x{v}" for k, v in m.objects.items()) + (f", wall x{m.walls}" if m.walls else "")
        table.add_row(
            m.name, str(m.num_agents), f"{m.width}x{m.height}", objects, m.reward_rule, str(m.max_steps), m.description
        )
    _out().print(table)


@app.command()
def policies() -> None:
    """List the policy registry: short name, class path, whether DAF can train it."""
    from daf.policies.registry import TRAINABLE, list_policies

    table = Table(title="policies")
    for column in ("name", "class path", "trainable"):
        table.add_column(column)
    for name, path in list_policies().items():
        table.add_row(name, path, "yes" if name in TRAINABLE else "no")
    _out().print(table)
    _out().print("Any dotted path to a mettagrid MultiAgentPolicy subclass works too (e.g. mypackage.MyPolicy).")


@app.command()
def check(
    mission: MissionsOpt = None,
    policy: Annotated[list[str] | None, typer.Option("--policy", "-p", help="Policy to import (repeatable).")] = None,
    output_dir: Annotated[str, typer.Option("--output-dir")] = "daf_output",
    device: Annotated[str, typer.Option("--device")] = "auto",
) -> None:
    """Check this machine: Python, packages, device, missions, policies, disk. Exit 1 if unhealthy.

    Without --mission/--policy every mission and registered policy is checked.
    """
    with _handled():
        from daf.environment_checks import ERROR, OK, daf_check_environment
        from daf.missions import list_missions
        from daf.policies.registry import list_policies

        report = daf_check_environment(mission or list_missions(), policy or list(list_policies()), output_dir, device)
        table = Table(title="environment")
        for column in ("check", "status", "message"):
            table.add_column(column)
        colors = {OK: "green", ERROR: "red"}
        for c in report.checks:
            table.add_row(escape(c.name), f"[{colors.get(c.status, 'yellow')}]{c.status}[/]", escape(c.message))
        out = _out()
        out.print(table)
        healthy = report.is_healthy()
        out.print(
            f"environment: {'[green]healthy[/]' if healthy else '[red]unhealthy[/]'} "
            f"({len(report.errors)} errors, {len(report.warnings)} warnings)"
        )
    if not healthy:
        _exit(EXIT_FAILED, "; ".join(f"{c.name}: {c.message}" for c in report.errors))


# ---------------------------------------------------------------------------------------------------------------------
# Pipeline commands


@app.command()
def train(
    config: ConfigOpt = None,
    policy: Annotated[str | None, typer.Option("--policy", "-p", help="Trainable policy (lstm, mlp, ...).")] = None,
    data_path: Annotated[str | None, typer.Option("--data-path", help="Warm-start weights.")] = None,
    mission: MissionsOpt = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Agent-steps to train for.")] = None,
    eval_mission: Annotated[
        list[str] | None, typer.Option("--eval-mission", help="Evaluate on this mission afterwards (repeatable).")
    ] = None,
    eval_episodes: Annotated[int | None, typer.Option("--eval-episodes")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Name of the run (resumes its checkpoints).")] = None,
    output_dir: OutputDirOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train a policy with PPO (training pipeline): validation -> training -> checkpoint -> evaluation.

    Exit codes: 0 success, 1 failed, 2 bad input/config, 3 partial (e.g. the evaluation failed).
    """
    from daf.config import DAFTrainingConfig

    with _handled():
        flags = dict(
            policy_class_path=policy,
            policy_data_path=data_path,
            missions=mission,
            num_training_steps=steps,
            eval_missions=eval_mission,
            eval_episodes=eval_episodes,
            run_id=run_id,
            **_common(output_dir, device, seed),
        )
        cfg = load_config(DAFTrainingConfig, config, flags, set_)
        check_missions([*cfg.missions, *cfg.eval_missions])
        entry = _entry(cfg.policy_class_path, cfg.policy_data_path)
        check_policies([entry], trainable=True)

        from daf.orchestrators import daf_run_training_pipeline

        run_pipeline("training", lambda: daf_run_training_pipeline(config=cfg))


def _entry(class_path: str, data_path: str | None = None) -> Any:
    from daf.config import PolicyEntry

    return PolicyEntry(class_path=class_path, data_path=data_path)


@app.command()
def compare(
    config: ConfigOpt = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy", "-p", help="class_path, class_path:data_path or name=class_path:data_path (repeatable)."
        ),
    ] = None,
    mission: MissionsOpt = None,
    episodes: Annotated[int | None, typer.Option("--episodes", "-n", help="Episodes per mission.")] = None,
    parallel: ParallelOpt = None,
    output_dir: OutputDirOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set_: SetOpt = None,
) -> None:
    """Compare policies (comparison pipeline): evaluation -> corrected significance tests -> HTML report.

    Exit codes: 0 success, 1 failed, 2 bad input/config, 3 partial (e.g. the report failed).
    """
    from daf.config import DAFComparisonConfig

    with _handled():
        entries = [parse_policy(p) for p in policy] if policy else None
        flags = dict(
            policies=entries,
            missions=mission,
            episodes_per_mission=episodes,
            parallel_evaluation=parallel,
            **_common(output_dir, device, seed),
        )
        cfg = load_config(DAFComparisonConfig, config, flags, set_)
        check_missions(cfg.missions)
        check_policies(cfg.policies)

        from daf.orchestrators import daf_run_comparison_pipeline

        run_pipeline("comparison", lambda: daf_run_comparison_pipeline(config=cfg))


@app.command()
def sweep(
    config: Annotated[Path, typer.Option("--config", "-c", help="Sweep YAML (DAFSweepConfig).")],
    trials: Annotated[int | None, typer.Option("--trials", help="Trials to run (default: grid size, or 10).")] = None,
    compare_best: Annotated[
        bool, typer.Option("--compare-best", help="Compare the top trials with the baseline afterwards.")
    ] = False,
    comparison_episodes: Annotated[int, typer.Option("--comparison-episodes", help="Episodes per mission.")] = 10,
    parallel: Annotated[bool, typer.Option("--parallel", help="Run trials concurrently (max_parallel_jobs).")] = False,
    output_dir: OutputDirOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set_: SetOpt = None,
) -> None:
    """Hyperparameter sweep (sweep pipeline): validation -> trials -> best config -> (optional) comparison.

    Exit codes: 0 success, 1 failed, 2 bad input/config, 3 partial (e.g. the comparison failed).
    """
    from daf.config import DAFSweepConfig

    with _handled():
        if comparison_episodes < 1:
            raise BadInput(f"--comparison-episodes: must be >= 1, got {comparison_episodes}")
        cfg = load_config(DAFSweepConfig, config, dict(num_trials=trials, **_common(output_dir, device, seed)), set_)
        check_missions(cfg.missions)
        check_policies([_entry(cfg.policy_class_path, cfg.policy_data_path)], trainable=True)

        from daf.orchestrators import daf_run_sweep_pipeline

        run_pipeline(
            "sweep",
            lambda: daf_run_sweep_pipeline(
                config=cfg, compare_best=compare_best, comparison_episodes=comparison_episodes, parallel_stages=parallel
            ),
        )


@app.command()
def benchmark(
    config: ConfigOpt = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="Policy to benchmark (repeatable; trained first when trainable without "
            "data_path): class_path[:data_path] or name=class_path:data_path.",
        ),
    ] = None,
    mission: MissionsOpt = None,
    training_mission: Annotated[
        list[str] | None, typer.Option("--training-mission", help="Train on these (default: --mission).")
    ] = None,
    episodes: Annotated[int | None, typer.Option("--episodes", "-n", help="Episodes per mission.")] = None,
    training_steps: Annotated[int | None, typer.Option("--training-steps", help="Agent-steps of training.")] = None,
    package: Annotated[
        bool | None, typer.Option("--package/--no-package", help="Build and validate a deployment bundle.")
    ] = None,
    baselines: Annotated[
        bool | None, typer.Option("--baselines/--no-baselines", help="Compare with the baseline policies.")
    ] = None,
    parallel: ParallelOpt = None,
    output_dir: OutputDirOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    set_: SetOpt = None,
) -> None:
    """Benchmark (benchmark pipeline): validation -> training -> evaluation -> comparison -> deployment package.

    Exit codes: 0 success, 1 failed, 2 bad input/config, 3 partial (e.g. the package failed).
    """
    from daf.config import DAFBenchmarkConfig

    with _handled():
        entries = [parse_policy(p) for p in policy] if policy else None
        flags = dict(
            policies=entries,
            missions=mission,
            training_missions=training_mission,
            episodes_per_mission=episodes,
            training_steps=training_steps,
            create_deployment_package=package,
            compare_baselines=baselines,
            parallel_evaluation=parallel,
            **_common(output_dir, device, seed),
        )
        cfg = load_config(DAFBenchmarkConfig, config, flags, set_)
        check_missions([*cfg.missions, *(cfg.training_missions or [])])
        given = {e.class_path for e in cfg.policies}
        extra = [_entry(b) for b in cfg.baselines if b not in given] if cfg.compare_baselines else []
        check_policies(list(cfg.policies) + extra)

        from daf.orchestrators import daf_run_benchmark_pipeline

        run_pipeline("benchmark", lambda: daf_run_benchmark_pipeline(config=cfg))


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation without a pipeline


@app.command()
def evaluate(
    policy: Annotated[str, typer.Argument(help="class_path, class_path:data_path or name=class_path:data_path.")],
    data_path: Annotated[str | None, typer.Option("--data-path", help="Weights (instead of :data_path).")] = None,
    mission: MissionsOpt = None,
    episodes: Annotated[int, typer.Option("--episodes", "-n", min=1, help="Episodes per mission.")] = 10,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    device: Annotated[str, typer.Option("--device")] = "cpu",
    output_dir: Annotated[str, typer.Option("--output-dir", help="Where the results JSON goes.")] = "daf_output",
) -> None:
    """Evaluate one policy on missions (default: training_facility_1), with a per-episode progress bar.

    Runs daf.evaluation directly, not a Prefect flow: one policy has nothing to be compared with, so the
    comparison pipeline's significance tests add nothing, and this skips the Prefect server start.
    Results (per-episode rewards) are written as JSON under OUTPUT_DIR/evaluations/.
    Exit codes: 0 success, 1 unexpected error, 2 bad input.
    """
    from daf.config import PolicyEntry

    with _handled():
        fields = parse_policy(policy)
        if data_path:
            fields["data_path"] = data_path
        entry = PolicyEntry(**fields)
        missions_ = mission or ["training_facility_1"]
        check_missions(missions_)
        check_policies([entry])
        results = _evaluate_with_progress(entry, missions_, episodes, seed, device)
        path = _save_evaluations(results, output_dir)
        _show_evaluation_table(results, seed, _out())
        _out().print(f"outputs:\n  result_path: {escape(str(path.resolve()))}", soft_wrap=True)


def _evaluate_with_progress(entry: Any, missions_: list[str], episodes: int, seed: int, device: str) -> list[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from daf.comparison import display_names, to_spec
    from daf.evaluation import evaluate as run_evaluation
    from daf.events import EpisodesProgress

    name = display_names([entry])[0]
    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=_err()) as progress:
        for mission in missions_:
            bar = progress.add_task(escape(f"{name} on {mission} (episodes)"), total=episodes)

            def advance(event: EpisodesProgress, bar: Any = bar) -> None:
                progress.update(bar, completed=event.done, total=event.total)

            results.append(
                run_evaluation(
                    to_spec(entry), mission, episodes, seed, policy_name=name, device=device, progress=advance
                )
            )
    return results


def _save_evaluations(results: list[Any], output_dir: str) -> Path:
    from daf.results import atomic_write_text

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in results[0].policy_name)
    path = Path(output_dir) / "evaluations" / f"{safe}-{stamp}.json"
    return atomic_write_text(path, json.dumps([r.to_dict() for r in results], indent=2, default=str))


def _show_evaluation_table(results: list[Any], seed: int, console: Console) -> None:
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


# ---------------------------------------------------------------------------------------------------------------------
# Packaging


def _show_validation(report: Any, console: Console) -> None:
    table = Table(title=f"bundle checks: {escape(report.path)}", title_justify="left")
    for column in ("check", "status", "message"):
        table.add_column(column)
    colors = {"pass": "green", "fail": "red", "skip": "yellow"}
    for c in report.checks:
        table.add_row(escape(c.name), f"[{colors.get(c.status, 'white')}]{c.status}[/]", escape(c.message))
    console.print(table)
    console.print(f"bundle: {'[green]valid[/]' if report.ok else '[red]INVALID[/]'}")


@app.command()
def package(
    policy: Annotated[str, typer.Argument(help="Policy name or class path (e.g. baseline, lstm, pkg.MyPolicy).")],
    data_path: Annotated[str | None, typer.Option("--data-path", help="Weights file to bundle.")] = None,
    output_dir: Annotated[str, typer.Option("--output-dir", help="Where <name>.zip goes.")] = "daf_output/packages",
    name: Annotated[str | None, typer.Option("--name", help="Bundle name (default: the class name).")] = None,
    mission: MissionsOpt = None,
) -> None:
    """Build a policy bundle (zip) and validate it on its missions. Exit 0 valid, 1 invalid, 2 bad input."""
    from mettagrid.policy.policy import PolicySpec

    from daf.packaging import build_package, validate_package

    with _handled():
        missions_ = mission or ["training_facility_1"]
        check_missions(missions_)
        path = build_package(
            PolicySpec(class_path=policy, data_path=data_path), output_dir, name=name, missions=missions_
        )
        report = validate_package(path, missions=missions_)
        out = _out()
        _show_validation(report, out)
        out.print(f"outputs:\n  deployment_package: {escape(str(Path(path).resolve()))}", soft_wrap=True)
    if not report.ok:
        _exit(EXIT_FAILED, "; ".join(report.errors) or "no check passed")


@app.command("validate-package")
def validate_package_command(
    path: Annotated[Path, typer.Argument(help="Bundle zip to check.")],
    mission: MissionsOpt = None,
    reward_threshold: Annotated[
        float | None, typer.Option("--reward-threshold", help="Also require this mean reward per mission.")
    ] = None,
    eval_episodes: Annotated[int, typer.Option("--eval-episodes", min=1)] = 5,
) -> None:
    """Validate a bundle the way a tournament would load it. Exit 0 valid, 1 invalid, 2 bad input."""
    from daf.packaging import validate_package

    with _handled():
        if not path.is_file():
            raise BadInput(f"{path}: bundle not found")
        if mission:
            check_missions(mission)
        report = validate_package(
            path, missions=mission, reward_threshold=reward_threshold, eval_episodes=eval_episodes
        )
        _show_validation(report, _out())
    if not report.ok:
        _exit(EXIT_FAILED, "; ".join(report.errors) or "no check passed")


if __name__ == "__main__":
    app()
