"""The commands that report without running a pipeline: missions, policies, check (the machine's health)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from daf.cli.application import stdout_console
from daf.cli.exits import EXIT_FAILED, errors_as_exit_codes, exit_with
from daf.cli.options import DEFAULT_OUTPUT_DIR, MissionsOpt
from daf.cli.rendering import show_environment


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
    stdout_console().print(table)


def policies() -> None:
    """List the policy registry: short name, class path, whether DAF can train it."""
    from daf.policies.registry import list_policies, trainable_policies

    trainable = trainable_policies()
    table = Table(title="policies")
    for column in ("name", "class path", "trainable"):
        table.add_column(column)
    for name, path in list_policies().items():
        table.add_row(name, path, "yes" if name in trainable else "no")
    out = stdout_console()
    out.print(table)
    out.print("Any dotted path to a mettagrid MultiAgentPolicy subclass works too (e.g. mypackage.MyPolicy).")


def check(
    mission: MissionsOpt = None,
    policy: Annotated[list[str] | None, typer.Option("--policy", "-p", help="Policy to import (repeatable).")] = None,
    output_dir: Annotated[str, typer.Option("--output-dir")] = DEFAULT_OUTPUT_DIR,
    device: Annotated[str, typer.Option("--device")] = "auto",
    docker_image: Annotated[
        str | None,
        typer.Option(
            "--docker",
            help="Also check the Docker host (DOCKER_HOST) of a daf-docker-gpu worker: does a container of this image "
            "start with every GPU? e.g. --docker daf-worker:latest",
        ),
    ] = None,
) -> None:
    """Check this machine: Python, packages, device, missions, policies, disk. Exit 1 if unhealthy.

    Without --mission/--policy every mission and registered policy is checked.
    """
    with errors_as_exit_codes():
        from daf.environment_checks import daf_check_docker_host, daf_check_environment
        from daf.missions import list_missions
        from daf.policies.registry import list_policies

        report = daf_check_environment(mission or list_missions(), policy or list(list_policies()), output_dir, device)
        if docker_image is not None:
            report.checks += daf_check_docker_host(docker_image).checks
        show_environment(report, stdout_console())
    if not report.is_healthy():
        exit_with(EXIT_FAILED, "; ".join(f"{c.name}: {c.message}" for c in report.errors))
