"""`daf evaluate`: one policy on missions, in this process (no Prefect flow), with a per-episode progress bar;
the per-episode results are written as JSON."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from daf.cli.application import stderr_console, stdout_console
from daf.cli.configs import parse_policy
from daf.cli.exits import errors_as_exit_codes
from daf.cli.input_checks import check_missions, check_policies, writable_folder
from daf.cli.options import DEFAULT_MISSION, DEFAULT_OUTPUT_DIR, MissionsOpt
from daf.cli.rendering import show_outputs, show_policy_evaluation
from daf.config import MAX_EPISODES, MAX_SEED
from daf.files import atomic_write_text

if TYPE_CHECKING:
    from daf.config import PolicyEntry
    from daf.evaluation import EvaluationResult
    from daf.events import EpisodesProgress


def evaluate(
    policy: Annotated[str, typer.Argument(help="class_path, class_path:data_path or name=class_path:data_path.")],
    data_path: Annotated[str | None, typer.Option("--data-path", help="Weights (instead of :data_path).")] = None,
    mission: MissionsOpt = None,
    episodes: Annotated[
        int, typer.Option("--episodes", "-n", min=1, max=MAX_EPISODES, help="Episodes per mission.")
    ] = 10,
    seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED)] = 42,
    device: Annotated[str, typer.Option("--device")] = "cpu",
    output_dir: Annotated[str, typer.Option("--output-dir", help="Where the results JSON goes.")] = DEFAULT_OUTPUT_DIR,
) -> None:
    """Evaluate one policy on missions (default: training_facility_1), with a per-episode progress bar.

    Runs daf.evaluation directly, not a Prefect flow: one policy has nothing to be compared with, so the
    comparison pipeline's significance tests add nothing, and this skips the Prefect server start.
    Results (per-episode rewards) are written as JSON under OUTPUT_DIR/evaluations/.
    Exit codes: 0 success, 1 unexpected error, 2 bad input.
    """
    from daf.config import PolicyEntry

    with errors_as_exit_codes():
        fields = parse_policy(policy)
        if data_path:
            fields["data_path"] = data_path
        entry = PolicyEntry(**fields)
        missions = mission or [DEFAULT_MISSION]
        check_missions(missions)
        check_policies([entry])
        folder = writable_folder(output_dir, "evaluations")  # before the episodes, not after them
        results = _evaluate_with_progress(entry, missions, episodes, seed, device)
        path = _save_evaluations(results, folder)
        out = stdout_console()
        show_policy_evaluation(results, seed, out)
        show_outputs({"result_path": str(path)}, out)


def _evaluate_with_progress(
    entry: PolicyEntry, missions: list[str], episodes: int, seed: int, device: str
) -> list[EvaluationResult]:
    from daf.comparison import display_names, to_spec
    from daf.evaluation import evaluate as run_evaluation

    name = display_names([entry])[0]
    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr_console()) as progress:
        for mission in missions:
            bar = progress.add_task(escape(f"{name} on {mission} (episodes)"), total=episodes)

            def advance(event: EpisodesProgress, bar: TaskID = bar) -> None:
                progress.update(bar, completed=event.done, total=event.total)

            results.append(
                run_evaluation(
                    to_spec(entry), mission, episodes, seed, policy_name=name, device=device, progress=advance
                )
            )
    return results


def _save_evaluations(results: list[EvaluationResult], folder: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in results[0].policy_name)
    path = folder / f"{safe}-{stamp}.json"
    return atomic_write_text(path, json.dumps([r.to_dict() for r in results], indent=2, default=str))
