"""Checks a sweep passes before any trial trains: its overrides, every grid point (or the ends of every range) as a
training config, the policy and its warm-start weights, its output directory."""

from __future__ import annotations

import itertools
from typing import Any

from mettagrid.policy.policy import PolicySpec

from daf.config import DAFSweepConfig, DAFTrainingConfig, RangeSpec, SearchDimension, validate_search_space
from daf.missions import get_mission
from daf.policies.registry import load_policy, require_trainable, resolve_class_path
from daf.reward_shaping import check_shaping
from daf.simulation import env_interface
from daf.sweeps._errors import SweepError
from daf.sweeps._study import foreign_storage_problem, storage_url, sweep_dir
from daf.sweeps._trial import SWEEP_OWNED, trial_config
from daf.training import validate_training_config


def validate_sweep(config: DAFSweepConfig) -> dict[str, SearchDimension]:
    """Check everything a trial needs before any training starts; raises SweepError naming the problem."""
    try:
        space = validate_search_space(config.search_space)
        _check_overrides(config, space)
        points = _points_to_check(config, space)
        trial_configs = [trial_config(config, p, number=0, threads=1, workers=1) for p in points]
        validate_training_config(trial_configs[0])
        games = {m: get_mission(m) for m in config.missions}  # every point trains on the sweep's missions
        for trial in trial_configs[1:]:
            check_shaping(games, trial.reward_shaping)
        _check_policy(trial_configs[0])
    except ValueError as exc:
        raise SweepError(f"sweep {config.name!r}: {exc}") from None
    try:
        sweep_dir(config).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"sweep {config.name!r}: output dir {sweep_dir(config)} cannot be created: {exc}") from None
    problem = foreign_storage_problem(storage_url(config))
    if problem:
        raise SweepError(f"sweep {config.name!r}: {problem}")
    return space


def _check_overrides(config: DAFSweepConfig, space: dict[str, SearchDimension]) -> None:
    clash = sorted(set(config.training) & (SWEEP_OWNED | set(space)))
    if clash:
        raise ValueError(
            f"training overrides {clash} are set by the sweep itself (use the sweep's own fields or search_space)"
        )
    if config.policy_data_path and "hidden_size" in space:
        raise ValueError("search_space.hidden_size cannot be searched with a warm start: the weights fix it")
    for name, dim in space.items():
        if isinstance(dim, RangeSpec) and dim.log and dim.step is not None and not (dim.is_int and dim.step == 1):
            raise ValueError(f"search_space.{name}: a log range cannot have a step (Optuna samples it continuously)")


def _points_to_check(config: DAFSweepConfig, space: dict[str, SearchDimension]) -> list[dict[str, Any]]:
    """Every grid point (a bad combination fails now, not hours in); else the ends of every range, and every value
    of every list with the others at their first end (a sampler may draw any of them)."""
    if config.strategy == "grid":
        return [dict(zip(space, values)) for values in itertools.product(*space.values())]
    ends = [{name: _end(dim, pick) for name, dim in space.items()} for pick in (0, -1)]
    values = [
        {**ends[0], name: value} for name, dim in space.items() if not isinstance(dim, RangeSpec) for value in dim[1:-1]
    ]
    return ends + values


def _end(dim: SearchDimension, pick: int) -> Any:
    if not isinstance(dim, RangeSpec):
        return dim[pick]
    value = dim.low if pick == 0 else dim.high
    return int(value) if dim.is_int else value


def _check_policy(config: DAFTrainingConfig) -> None:
    require_trainable(config.policy_class_path)
    if config.policy_data_path:
        # Loading the warm-start weights into the policy catches a checkpoint of another architecture now.
        spec = PolicySpec(
            class_path=resolve_class_path(config.policy_class_path),
            data_path=config.policy_data_path,
            init_kwargs={"hidden_size": config.hidden_size},
        )
        load_policy(spec, env_interface([get_mission(m) for m in config.missions]))
