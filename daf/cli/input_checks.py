"""Checks of what a command was given, made before any compute and before the Prefect server starts: an unknown
mission or policy, a policy that cannot be trained, repeated policy names are bad input (exit 2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from daf.cli.exits import BadInput

if TYPE_CHECKING:
    from daf.config import DAFSweepConfig, DAFTrainingConfig, PolicyEntry


def check_missions(missions: list[str]) -> None:
    """Every mission is a known name or a readable mission YAML."""
    from daf.missions import get_mission

    for mission in missions:
        try:
            get_mission(mission)
        except ValueError as exc:
            raise BadInput(str(exc).splitlines()[0]) from None


def check_policies(entries: list[PolicyEntry]) -> None:
    """Every policy imports (and its data file exists); names are unique."""
    from daf.comparison import display_names, to_spec
    from daf.policies.registry import check_spec

    for entry in entries:
        check_spec(to_spec(entry))
    display_names(entries)


def check_trained_policy(cfg: DAFTrainingConfig | DAFSweepConfig) -> None:
    """The policy a training run or a sweep trains: it imports, its warm-start weights exist, DAF can train it."""
    from daf.config import PolicyEntry
    from daf.policies.registry import require_trainable

    check_policies([PolicyEntry(class_path=cfg.policy_class_path, data_path=cfg.policy_data_path)])
    require_trainable(cfg.policy_class_path)


def writable_folder(output_dir: str, name: str) -> Path:
    """`output_dir`/`name`, created, when `output_dir` is one the configs accept (daf.config.check_output_location)
    and this process can write into the folder; BadInput naming it otherwise (checked before the work whose results
    go there, not after)."""
    from daf.config import check_output_location

    try:
        folder = Path(check_output_location(output_dir)) / name
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"output directory {folder} cannot be created: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"output directory {folder} is not writable")
    return folder
