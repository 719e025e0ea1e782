"""One trial: the DAFTrainingConfig it trains, the intermediate evaluations it reports to the pruner while it
trains, and its score (the final checkpoint evaluated on `episodes_per_trial` seeded episodes per mission)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import optuna
from mettagrid.policy.policy import PolicySpec

from daf.config import DAFSweepConfig, DAFTrainingConfig, Role, SearchDimension, fields_with
from daf.evaluation import evaluate, evaluate_policy
from daf.interrupts import describe_stop
from daf.policies.neural import NeuralPolicy
from daf.stats import iqm
from daf.sweeps._search import suggest
from daf.sweeps._study import sweep_dir
from daf.training import StopTraining, train

# DAFTrainingConfig fields each trial sets itself (trial_config); a `training` override of them would be lost.
SWEEP_OWNED = fields_with(DAFTrainingConfig, Role.SWEEP_OWNED)


def trial_config(
    config: DAFSweepConfig, params: dict[str, Any], number: int, threads: int, workers: int
) -> DAFTrainingConfig:
    """What trial run `number` trains: the sweep's resources and `training` overrides, then `params`."""
    fields = {"torch_threads": threads, **config.resources(), **config.training, **params}
    fields.update(
        policy_class_path=config.policy_class_path,
        policy_data_path=config.policy_data_path,
        missions=list(config.missions),
        num_training_steps=config.training_steps_per_trial,
        run_id=f"{config.name}-trial-{number}",
        checkpoint_dir=str(sweep_dir(config) / "checkpoints"),
        seed=config.seed + number,
        progress=False,
        # Parallel workers share the GPU: together they stay within the configured fraction.
        gpu_memory_fraction=config.gpu_memory_fraction / workers,
    )
    return DAFTrainingConfig.from_dict(fields, source=f"trial {number} {params}")


def score(rewards: dict[str, list[float]], objective: str) -> float:
    """The objective over the episode rewards of all missions pooled."""
    pooled = [r for episode_rewards in rewards.values() for r in episode_rewards]
    return iqm(pooled) if objective == "iqm" else float(np.mean(pooled))


class PruningHook:
    """Called after every PPO update: every `interval` agent-steps, evaluate, report and maybe stop."""

    def __init__(self, trial: optuna.Trial, config: DAFSweepConfig):
        self.trial = trial
        self.config = config
        self.budget = config.training_steps_per_trial
        self.interval = config.eval_interval_steps or max(1, self.budget // 4)
        self.next_report = self.interval
        self.global_step = 0

    def __call__(self, global_step: int, policy: NeuralPolicy) -> None:
        self.global_step = global_step
        # Without a pruner nothing reads intermediate values: skip their evaluations. The last update is
        # followed by the full evaluation; no intermediate one is needed there either.
        if self.config.pruner == "none" or global_step < self.next_report or global_step >= self.budget:
            return
        # Report at the interval boundary, so trials with other rollout sizes are compared at the same step.
        step = global_step // self.interval * self.interval
        self.next_report = step + self.interval
        # As many episodes as the final score: with 3 the pruner's verdicts were noise-driven (sweep bench).
        episodes = self.config.episodes_per_trial
        rewards = {m: evaluate_policy(policy, m, episodes, self.config.seed).rewards for m in self.config.missions}
        value = score(rewards, self.config.objective)
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise StopTraining(f"pruned at {global_step} agent-steps (intermediate value {value:.3f})")


class Objective:
    """Optuna's objective: train one trial, record what happened in its user attrs, return its score."""

    def __init__(self, config: DAFSweepConfig, space: dict[str, SearchDimension], threads: int, workers: int):
        self.config = config
        self.space = space
        self.threads = threads
        self.workers = workers

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.space)
        # A re-run of an interrupted trial keeps its run number: same run id (resumes) and same seed.
        run_number = trial.user_attrs.get("run_number", trial.number)
        trial.set_user_attr("run_number", run_number)
        hook = PruningHook(trial, self.config)
        started = time.perf_counter()
        try:
            tc = trial_config(self.config, params, run_number, self.threads, self.workers)
            trial.set_user_attr("run_dir", str(tc.checkpoint_root() / tc.run_id))
            return self._train_and_score(trial, tc, hook)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            # Optuna records the trial as FAIL (optimize catches Exception); the message stays with the trial.
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        except BaseException as exc:  # a stop signal (daf/interrupts.py): the trial runs again on resume
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("error", f"{describe_stop(exc)}; it runs again when the sweep is resumed")
            raise
        finally:
            trial.set_user_attr("duration_s", time.perf_counter() - started)
            trial.set_user_attr("agent_steps", max(hook.global_step, trial.user_attrs.get("agent_steps", 0)))

    def _train_and_score(self, trial: optuna.Trial, tc: DAFTrainingConfig, hook: PruningHook) -> float:
        try:
            result = train(tc, on_update=hook)
        except StopTraining as stop:
            raise optuna.TrialPruned(str(stop)) from None
        trial.set_user_attr("agent_steps", result.global_step)
        trial.set_user_attr("resumed_from_step", result.resumed_from_step)
        trial.set_user_attr("checkpoint", result.final_checkpoint)
        spec = PolicySpec(class_path=result.class_path, data_path=result.final_checkpoint)
        cfg = self.config
        rewards = {m: evaluate(spec, m, cfg.episodes_per_trial, cfg.seed).rewards for m in cfg.missions}
        trial.set_user_attr("episode_rewards", rewards)
        trial.set_user_attr("mission_means", {m: float(np.mean(r)) for m, r in rewards.items()})
        return score(rewards, cfg.objective)
