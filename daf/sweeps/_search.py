"""The search space in Optuna's terms: a trial's sampled hyperparameters, the sampler for each strategy, the pruner,
and how many trials both start from."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna

from daf.config import DAFSweepConfig, RangeSpec, SearchDimension


def suggest(trial: optuna.Trial, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """Sample the trial's value of every searched hyperparameter."""
    params: dict[str, Any] = {}
    for name, dim in space.items():
        if not isinstance(dim, RangeSpec):
            params[name] = trial.suggest_categorical(name, dim)
        elif dim.is_int:
            params[name] = trial.suggest_int(name, int(dim.low), int(dim.high), step=int(dim.step), log=dim.log)
        else:
            params[name] = trial.suggest_float(name, dim.low, dim.high, step=dim.step, log=dim.log)
    return params


def sampler(
    config: DAFSweepConfig, space: dict[str, SearchDimension], worker: int, session: int
) -> optuna.samplers.BaseSampler:
    """The strategy's sampler for one worker process of one session (one run_sweep call)."""
    if config.strategy == "grid":
        # Every worker and session must shuffle the grid alike: GridSampler maps trial numbers to grid points.
        return optuna.samplers.GridSampler(space, seed=config.seed)
    # A resumed session or another worker with the sweep's own seed would redraw the points already tried.
    seed = int(np.random.SeedSequence([config.seed, session, worker]).generate_state(1)[0])
    if config.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(config, cap=10))


def startup_trials(config: DAFSweepConfig, cap: int) -> int:
    """A third of the trials the sweep surely runs, 1 to `cap`: TPE's random start, the median's reference set."""
    # Optuna's defaults (10 random trials for TPE, 5 completed for the median pruner) would make a 10-trial sweep
    # plain random search that prunes nothing. Under a compute budget only the full trials it affords are sure:
    # with num_trials 24, 8 of the ~10 trials a 6-trial budget ran were random (sweep bench).
    trials = config.total_trials()
    if config.max_agent_steps is not None:
        trials = min(trials, config.max_agent_steps // config.training_steps_per_trial)
    return max(1, min(cap, trials // 3))


def pruner(config: DAFSweepConfig) -> optuna.pruners.BasePruner:
    """The configured pruner, judging trials from the warm-up on."""
    # No verdict before the warm-up (a quarter of the budget by default): early on every setting scores near
    # zero, and with finer intermediate evaluations the noise there pruned the sweep's best settings.
    if config.pruner == "median":
        # Judging against a single completed trial let one that was lucky early prune all eleven after it
        # (sweep bench, seed 3); a median over a few is robust to that.
        return optuna.pruners.MedianPruner(
            n_startup_trials=startup_trials(config, cap=5), n_warmup_steps=config.pruner_warmup()
        )
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=config.pruner_warmup(), max_resource=config.training_steps_per_trial
        )
    return optuna.pruners.NopPruner()
