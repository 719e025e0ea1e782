"""A sweep's result: every trial's record, the best configuration, notes and plots, saved as sweep_results.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from daf.config import DAFSweepConfig
from daf.files import atomic_write_text
from daf.jsonable import to_jsonable
from daf.sweeps._errors import SweepError
from daf.sweeps._plots import write_plots
from daf.sweeps._study import agent_steps_trained, counts_as_finished, sweep_dir

# The user attrs recorded on a trial (by daf.sweeps._trial; retry_of by daf.sweeps._study), copied into its record.
_TRIAL_ATTRS = (
    "duration_s",
    "checkpoint",
    "error",
    "agent_steps",
    "resumed_from_step",
    "run_dir",
    "mission_means",
    "episode_rewards",
    "retry_of",
)


@dataclass
class BestConfig:
    hyperparameters: dict[str, Any]
    score: float
    trial_number: int
    checkpoint: str


@dataclass
class SweepResult:
    study_name: str
    storage: str
    output_dir: str
    trials: list[dict[str, Any]]
    best_config: BestConfig
    best_checkpoint: str
    results_path: str
    plots: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def collect(config: DAFSweepConfig, url: str, study: optuna.Study, notes: list[str] | None = None) -> SweepResult:
    """The result of the study as it stands, with its plots, written to sweep_results.json; raises SweepError if no
    trial completed."""
    trials = study.get_trials(deepcopy=False)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        problems = "; ".join(f"trial {t.number} {t.state.name}: {_trial_record(t)['error']}" for t in trials)
        raise SweepError(f"sweep {config.name!r}: no trial completed ({problems or 'no trials ran'})")
    best = study.best_trial
    best_config = BestConfig(
        hyperparameters=dict(best.params),
        score=float(best.value),
        trial_number=best.number,
        checkpoint=best.user_attrs["checkpoint"],
    )
    out = sweep_dir(config)
    plots, plot_notes = write_plots(study, out)
    notes = [*(notes or []), *plot_notes]
    finished = sum(counts_as_finished(t) for t in trials)
    if config.max_agent_steps is not None and finished < config.total_trials():
        notes.append(
            f"stopped on the compute budget: {finished} of {config.total_trials()} trials ran, "
            f"{agent_steps_trained(study):,} of max_agent_steps {config.max_agent_steps:,} agent-steps trained"
        )
    result = SweepResult(
        study_name=config.name,
        storage=url,
        output_dir=str(out),
        trials=[_trial_record(t) for t in trials],
        best_config=best_config,
        best_checkpoint=best_config.checkpoint,
        results_path=str(out / "sweep_results.json"),
        plots=plots,
        notes=notes,
    )
    atomic_write_text(result.results_path, json.dumps(result.to_dict(), indent=2))
    return result


def _trial_record(t: FrozenTrial) -> dict[str, Any]:
    record = {
        "number": t.number,
        "params": t.params,
        # Optuna gives a pruned trial its last intermediate value; only a completed trial has a score.
        "value": t.value if t.state == TrialState.COMPLETE else None,
        "state": t.state.name,
        "intermediate_values": dict(t.intermediate_values),
    }
    record.update({key: t.user_attrs.get(key) for key in _TRIAL_ATTRS})
    record["error"] = record["error"] or t.system_attrs.get("fail_reason")
    return record
