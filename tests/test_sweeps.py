"""Sweeps against the real trainer, evaluator and Optuna: every trial trains, and the numbers show it.

Budgets are small (mlp on training_facility_1): lr 0.003 learns visibly within 65k agent-steps (10 evaluation
episodes: 102-151 at seeds 0-2; lr 0.001 scored 74-92, and 19 once on 5 episodes), while lr 0 leaves the network
at its initialisation (a near-random policy, ~20 reward per episode).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from daf.config import ConfigError, DAFSweepConfig, validate_search_space
from daf.events import TrialFinished
from daf.policies.neural import load_weights
from daf.sweeps import SweepError, run_sweep, startup_trials, storage_url, validate_sweep
from daf.sweeps._search import pruner, sampler

REPO = Path(__file__).resolve().parents[1]
LEARNS = 65_536  # agent-steps: enough for learning rate LEARNS_AT to clearly beat an untrained policy
LEARNS_AT = 0.003


MIX = ["training_facility_1", "training_facility_2"]


def _config(tmp_path: Path, **overrides) -> DAFSweepConfig:
    base = {
        "name": "t",
        "output_dir": str(tmp_path / "out"),
        "policy_class_path": "mlp",
        "missions": ["training_facility_1"],
        "strategy": "grid",
        "training_steps_per_trial": 8192,
        "episodes_per_trial": 2,
        "pruner": "none",
        "device": "cpu",
        "seed": 0,
    }
    return DAFSweepConfig.from_dict({**base, **overrides})


def _by_number(result) -> list[dict]:
    return sorted(result.trials, key=lambda t: t["number"])


def test_grid_sweep_trains_each_trial_with_its_own_learning_rate(tmp_path):
    cfg = _config(
        tmp_path,
        name="lr",
        search_space={"learning_rate": [0.0, LEARNS_AT]},
        training_steps_per_trial=LEARNS,
        episodes_per_trial=10,
    )
    result = run_sweep(cfg)

    by_lr = {t["params"]["learning_rate"]: t for t in result.trials}
    assert [t["state"] for t in by_lr.values()] == ["COMPLETE", "COMPLETE"]
    assert result.best_config.hyperparameters == {"learning_rate": LEARNS_AT}
    assert result.best_config.trial_number == by_lr[LEARNS_AT]["number"]
    assert result.best_checkpoint == by_lr[LEARNS_AT]["checkpoint"]
    # lr 0 is the untrained policy; training must beat it by a wide margin, not by noise.
    assert by_lr[LEARNS_AT]["value"] > by_lr[0.0]["value"] + 20, {lr: t["value"] for lr, t in by_lr.items()}
    assert all(t["agent_steps"] >= LEARNS for t in by_lr.values())

    trained = load_weights(by_lr[LEARNS_AT]["checkpoint"])["state_dict"]
    untrained = load_weights(by_lr[0.0]["checkpoint"])["state_dict"]
    assert trained.keys() == untrained.keys()
    assert any(not torch.equal(trained[k], untrained[k]) for k in trained)

    saved = json.loads(Path(result.results_path).read_text())
    assert [t["number"] for t in saved["trials"]] == [0, 1]
    assert saved["best_config"]["hyperparameters"] == {"learning_rate": LEARNS_AT}
    assert set(result.plots) == {"optimization_history", "parallel_coordinates", "param_importances"}
    for png in result.plots.values():
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # `tensorboard --logdir <sweep>/checkpoints` shows one run per trial, each with its own learning rate.
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    board = EventMultiplexer().AddRunsFromDirectory(str(Path(result.results_path).parent / "checkpoints")).Reload()
    runs = {name.split("/")[0]: name for name in board.Runs()}
    assert set(runs) == {"lr-trial-0", "lr-trial-1"}, board.Runs()
    for number, lr in ((by_lr[0.0]["number"], 0.0), (by_lr[LEARNS_AT]["number"], LEARNS_AT)):
        rates = [e.value for e in board.Scalars(runs[f"lr-trial-{number}"], "charts/learning_rate")]
        assert rates and max(rates) == pytest.approx(lr)


@pytest.mark.parametrize(
    ("warmup", "judged_from"),
    # By default no verdict before a quarter of the budget; a configured warm-up moves the first verdict.
    [(None, LEARNS // 4), (LEARNS // 8, LEARNS // 8)],
)
def test_median_pruner_stops_a_bad_trial_before_its_budget(tmp_path, warmup, judged_from):
    # Seed 1 makes GridSampler run the list in order: the learning trial completes first.
    cfg = _config(
        tmp_path,
        name="prune",
        search_space={"learning_rate": [LEARNS_AT, 0.0]},
        seed=1,
        training_steps_per_trial=LEARNS,
        eval_interval_steps=LEARNS // 8,
        pruner_warmup_steps=warmup,
        pruner="median",
    )
    good, bad = _by_number(run_sweep(cfg))

    assert good["params"] == {"learning_rate": LEARNS_AT} and good["state"] == "COMPLETE", "grid order changed"
    assert sorted(good["intermediate_values"]) == [k * LEARNS // 8 for k in range(1, 8)]
    assert bad["state"] == "PRUNED"
    assert bad["value"] is None and bad["checkpoint"] is None
    # Reported every eighth of the budget and pruned at the first verdict, not before the warm-up ends.
    assert sorted(bad["intermediate_values"]) == list(range(LEARNS // 8, judged_from + 1, LEARNS // 8))
    assert bad["agent_steps"] < LEARNS
    last_step = max(bad["intermediate_values"])
    assert bad["intermediate_values"][last_step] < good["intermediate_values"][last_step]


_RUN_FROM_YAML = (
    "import sys; from daf.config import DAFSweepConfig; from daf.sweeps import run_sweep; "
    "run_sweep(DAFSweepConfig.from_yaml(sys.argv[1]))"
)


def _wait_until_mid_trial(proc: subprocess.Popen, cfg: DAFSweepConfig, timeout: float = 300) -> int:
    """Poll the study until one trial completed and the next has written a checkpoint; return that step."""
    first_run = Path(cfg.output_dir) / "sweeps" / cfg.name / "checkpoints" / f"{cfg.name}-trial-0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep process ended before it could be interrupted"
        if first_run.is_dir():  # the study exists once a trial has started
            trials = optuna.load_study(study_name=cfg.name, storage=storage_url(cfg)).get_trials()
            running = [t for t in trials if t.state == TrialState.RUNNING and "run_dir" in t.user_attrs]
            if running and any(t.state == TrialState.COMPLETE for t in trials):
                steps = sorted((Path(running[0].user_attrs["run_dir"]) / "checkpoints").glob("step_*"))
                if steps:
                    return int(steps[-1].name.removeprefix("step_"))
        time.sleep(0.2)
    raise AssertionError("the sweep did not reach its second trial in time")


def _snapshot(run_dir: str) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in Path(run_dir).rglob("*")}


def test_killed_sweep_resumes_and_runs_only_the_remaining_trials(tmp_path):
    lrs = [0.001, 0.0005, 0.0002]
    cfg = _config(
        tmp_path,
        name="resume",
        search_space={"learning_rate": lrs},
        training_steps_per_trial=16_384,
        training={"checkpoint_interval": 4096},
    )
    cfg.to_yaml(tmp_path / "sweep.yaml")
    with (tmp_path / "worker.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _RUN_FROM_YAML, str(tmp_path / "sweep.yaml")], cwd=REPO, stdout=log, stderr=log
        )
        try:
            checkpoint_step = _wait_until_mid_trial(proc, cfg)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    before = optuna.load_study(study_name=cfg.name, storage=storage_url(cfg)).get_trials()
    done = [t for t in before if t.state == TrialState.COMPLETE]
    (killed,) = [t for t in before if t.state == TrialState.RUNNING]
    untouched = {t.number: _snapshot(t.user_attrs["run_dir"]) for t in done}

    events: list[TrialFinished] = []
    result = run_sweep(cfg, progress=events.append)

    # Finished trials were neither re-run nor touched on disk; only the remaining grid points ran.
    assert {t.number: _snapshot(t.user_attrs["run_dir"]) for t in done} == untouched
    assert len(events) == len(lrs) - len(done)
    assert all(e.number > killed.number for e in events)
    trials = _by_number(result)
    assert sorted(t["params"]["learning_rate"] for t in trials if t["state"] == "COMPLETE") == sorted(lrs)

    # The interrupted trial is recorded as such and re-run with its parameters, resuming its checkpoint.
    interrupted = trials[killed.number]
    assert interrupted["state"] == "FAIL" and interrupted["error"].startswith("interrupted")
    (retry,) = [t for t in trials if t["retry_of"] == killed.number]
    assert retry["state"] == "COMPLETE" and retry["params"] == killed.params
    assert retry["run_dir"] == killed.user_attrs["run_dir"]
    assert retry["resumed_from_step"] >= checkpoint_step > 0


SWEEP_YAML = """\
name: yaml-sweep
output_dir: {out}
policy_class_path: mlp
missions: [training_facility_1]
search_space:
  learning_rate: [0.001, 0.0003]
strategy: grid
training_steps_per_trial: 8192
episodes_per_trial: 2
pruner: none
max_parallel_jobs: 2
seed: 3
"""


def test_yaml_sweep_runs_in_parallel_workers_and_is_not_rerun(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP_YAML.format(out=tmp_path / "out"))
    cfg = DAFSweepConfig.from_yaml(path)
    events: list[TrialFinished] = []
    result = run_sweep(cfg, progress=events.append)

    assert sorted(e.number for e in events) == [0, 1] and events[-1].completed == 2
    assert {t["params"]["learning_rate"] for t in result.trials} == {0.001, 0.0003}
    assert all(t["state"] == "COMPLETE" for t in result.trials)
    run_dirs = {t["run_dir"] for t in result.trials}
    assert len(run_dirs) == 2
    for run_dir in run_dirs:  # two workers share the 2 cores: one torch thread each
        trained_with = json.loads((Path(run_dir) / "config.json").read_text())
        assert trained_with["torch_threads"] == max(1, (os.cpu_count() or 1) // 2)
        assert trained_with["num_training_steps"] == 8192

    again: list[TrialFinished] = []
    repeat = run_sweep(cfg, progress=again.append)
    assert again == []
    assert repeat.notes[0].startswith(f"study '{cfg.name}' in ")
    assert "already has 2 of 2 trials finished: no trial ran" in repeat.notes[0]
    assert not any("already has" in note for note in result.notes)
    assert [(t["number"], t["value"]) for t in repeat.trials] == [(t["number"], t["value"]) for t in result.trials]

    changed = DAFSweepConfig.from_dict({**cfg.model_dump(), "search_space": {"learning_rate": [0.01]}})
    with pytest.raises(SweepError, match="search_space"):
        run_sweep(changed)


def test_shipped_example_config_is_valid(tmp_path):
    cfg = DAFSweepConfig.from_yaml(REPO / "configs" / "sweep.yaml")
    cfg.output_dir = str(tmp_path)
    assert "learning_rate" in validate_sweep(cfg)


@pytest.mark.parametrize(
    ("space", "pattern"),
    [
        ({"learnin_rate": [0.001]}, r"search_space\.learnin_rate: not a DAFTrainingConfig hyperparameter"),
        ({"learning_rate": []}, r"search_space\.learning_rate: empty list"),
        ({"learning_rate": {"low": 0.1, "high": 0.01}}, r"search_space\.learning_rate: .*low \(0\.1\) must be < high"),
        ({"learning_rate": ["fast"]}, r"search_space\.learning_rate: value 'fast' is invalid"),
        ({"num_envs": [0]}, r"search_space\.num_envs: value 0 is invalid"),
        # Every trial trains for training_steps_per_trial: searching the steps would be silently overwritten.
        ({"num_training_steps": [1000, 2000]}, r"search_space\.num_training_steps: not a DAFTrainingConfig hyper"),
    ],
)
def test_invalid_search_space_names_the_parameter(tmp_path, space, pattern):
    with pytest.raises(ConfigError, match=pattern):
        _config(tmp_path, search_space=space)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"training": {"learning_rate": 0.01}}, r"training overrides \['learning_rate'\] are set by the sweep"),
        ({"missions": ["no_such_mission"]}, "no_such_mission"),
        ({"policy_data_path": "missing/policy.pt"}, "missing/policy.pt does not exist"),
        ({"policy_class_path": "baseline"}, "not trainable"),
        # Each value is valid alone; the combination (48, 32) is not: caught before any trial trains.
        ({"search_space": {"num_steps": [64, 48], "bptt_horizon": [16, 32]}}, "multiple of bptt_horizon"),
        # A sampler may draw any listed value, not only the first and last: each is checked in the sweep's config.
        ({"strategy": "random", "search_space": {"bptt_horizon": [8, 48, 16]}}, r"multiple of bptt_horizon \(48\)"),
        # A mix's weights are checked against the sweep's missions.
        (
            {"missions": MIX, "search_space": {"mission_weights": [[1, 3], [1, 1, 1]]}},
            "mission_weights has 3 weights for 2 missions",
        ),
        # Every shaping point is checked against the sweep's missions, not only the first.
        (
            {"missions": ["assembler_1"], "search_space": {"reward_shaping": [{}, {"ore": 0.25}, {"crystal": 0.25}]}},
            "no training mission has an inventory item 'crystal'",
        ),
    ],
)
def test_invalid_setup_fails_before_any_training(tmp_path, overrides, pattern):
    cfg = _config(tmp_path, **{"search_space": {"learning_rate": [0.001]}, **overrides})
    with pytest.raises(SweepError, match=pattern):
        run_sweep(cfg)
    assert not (tmp_path / "out" / "sweeps" / "t" / "study.db").exists()


def test_a_sweep_never_writes_its_tables_into_another_applications_database(tmp_path):
    """Optuna creates its tables in whatever database `storage` names (an application's, or Prefect's own)."""
    import sqlite3

    app = tmp_path / "app.db"
    with sqlite3.connect(app) as connection:
        connection.execute("CREATE TABLE users (id INTEGER)")
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("not a database\n" * 100)
    for url, pattern in [
        (f"sqlite:///{app}", r"holds tables that are not an Optuna study's \(users\): .* a database of its own"),
        (f"sqlite:///{not_sqlite}", r"notes\.db is not a SQLite database"),
    ]:
        before = Path(url.removeprefix("sqlite:///")).read_bytes()
        with pytest.raises(SweepError, match=pattern):
            run_sweep(_config(tmp_path, search_space={"learning_rate": [0.001]}, storage=url))
        assert Path(url.removeprefix("sqlite:///")).read_bytes() == before  # untouched
    # An Optuna database of its own (an earlier sweep's) is fine.
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="other")
    assert validate_sweep(_config(tmp_path, search_space={"learning_rate": [0.001]},
                                  storage=f"sqlite:///{tmp_path / 'study.db'}"))  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"pruner_warmup_steps": 8192}, r"pruner_warmup_steps \(8192\) must be below training_steps_per_trial"),
        ({"max_agent_steps": 8191}, r"max_agent_steps \(8191\) is below training_steps_per_trial \(8192\)"),
    ],
)
def test_pruner_and_budget_settings_are_checked_against_the_trial_budget(tmp_path, overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        _config(tmp_path, search_space={"learning_rate": [0.001]}, **overrides)


@pytest.mark.parametrize(
    ("num_trials", "max_agent_steps", "tpe", "median"),
    # A third of the trials the sweep surely runs: the trial count, or the full trials its budget affords.
    [(12, None, 4, 4), (60, None, 10, 5), (2, None, 1, 1), (24, None, 8, 5), (24, 49152, 2, 2), (24, 57343, 2, 2)],
)
def test_random_start_and_median_reference_scale_with_the_trials_a_sweep_surely_runs(
    tmp_path, num_trials, max_agent_steps, tpe, median
):
    cfg = _config(
        tmp_path,
        search_space={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
        strategy="bayesian",
        num_trials=num_trials,
        max_agent_steps=max_agent_steps,
        pruner="median",
    )
    assert startup_trials(cfg, cap=10) == tpe
    assert startup_trials(cfg, cap=5) == median
    assert pruner(cfg)._n_startup_trials == median
    assert sampler(cfg, validate_search_space(cfg.search_space), 0, 0)._n_startup_trials == tpe


def test_compute_budget_stops_starting_trials_and_can_be_raised_to_continue(tmp_path):
    space = {"learning_rate": [0.001, 0.0005, 0.0002, 0.0001]}
    # Room for two full trials and half of a third: the third must not start.
    first = run_sweep(_config(tmp_path, name="budget", search_space=space, max_agent_steps=2 * 8192 + 4096))
    trained = sum(t["agent_steps"] for t in first.trials)
    assert [t["state"] for t in first.trials] == ["COMPLETE", "COMPLETE"]
    assert 2 * 8192 <= trained <= 2 * 8192 + 4096
    assert f"2 of 4 trials ran, {trained:,} of max_agent_steps 20,480 agent-steps trained" in " ".join(first.notes)

    more = run_sweep(_config(tmp_path, name="budget", search_space=space, max_agent_steps=4 * 8192 + 4096))
    assert [t["state"] for t in more.trials] == ["COMPLETE"] * 4
    assert {t["learning_rate"] for t in (r["params"] for r in more.trials)} == set(space["learning_rate"])
    # The first two trials were kept, not re-run.
    assert [(t["number"], t["checkpoint"], t["duration_s"]) for t in more.trials[:2]] == [
        (t["number"], t["checkpoint"], t["duration_s"]) for t in first.trials
    ]
    assert not any("compute budget" in note for note in more.notes)


# A trainable policy whose network diverges at hidden size 16: NaN logits in the update make its weights NaN, and
# torch then refuses to sample the next action, as when training diverges (config bounds keep DAF's own
# hyperparameters from producing that). Its untrained network is fine, so the contract check lets it start.
DIVERGING_POLICY = """
import torch
from daf.policies.neural import MLPNet, NeuralPolicy


class NaNAtSixteen(MLPNet):
    def __init__(self, layout, hidden_size=128):
        super().__init__(layout, hidden_size)
        self.nan = hidden_size == 16

    def forward(self, obs, state=None, resets=None):
        logits, values, state = super().forward(obs, state, resets)
        return (logits * float("nan") if self.nan and self.training else logits), values, state


class Diverging(NeuralPolicy):
    network_class = NaNAtSixteen
"""


def test_a_crashing_trial_is_recorded_and_the_sweep_continues(tmp_path, make_package):
    package = make_package(DIVERGING_POLICY)
    cfg = _config(tmp_path, name="crash", policy_class_path=f"{package}.Diverging",
                  search_space={"hidden_size": [16, 32]})  # fmt: skip
    trials = _by_number(run_sweep(cfg))
    (crashed,) = [t for t in trials if t["params"] == {"hidden_size": 16}]
    (healthy,) = [t for t in trials if t["params"] == {"hidden_size": 32}]

    assert crashed["state"] == "FAIL"
    assert crashed["error"].startswith("RuntimeError") and "nan" in crashed["error"]
    assert crashed["value"] is None
    assert healthy["state"] == "COMPLETE" and healthy["checkpoint"]


def test_sweep_without_a_completed_trial_reports_the_errors(tmp_path, make_package):
    package = make_package(DIVERGING_POLICY)
    cfg = _config(tmp_path, name="diverges", policy_class_path=f"{package}.Diverging",
                  search_space={"hidden_size": [16]})  # fmt: skip
    with pytest.raises(SweepError, match=r"no trial completed \(trial 0 FAIL: RuntimeError: .*nan"):
        run_sweep(cfg)


def test_trials_share_the_machine_unless_the_training_overrides_say_otherwise(tmp_path):
    from daf.sweeps._trial import trial_config

    space = {"search_space": {"learning_rate": [0.001]}}
    shared = trial_config(_config(tmp_path, gpu_memory_fraction=0.8, **space), {}, 3, threads=1, workers=4)
    assert (shared.gpu_memory_fraction, shared.torch_threads, shared.run_id) == (0.2, 1, "t-trial-3")
    # Trials on Dask workers of their own (a GPU each, a machine each): the per-trial settings win.
    spread = trial_config(
        _config(tmp_path, training={"gpu_memory_fraction": 0.9, "torch_threads": 4}, **space),
        {},
        3,
        threads=1,
        workers=4,
    )
    assert (spread.gpu_memory_fraction, spread.torch_threads) == (0.9, 4)
