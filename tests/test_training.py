"""Training: PPO learns, resumes from complete checkpoints only, and refuses bad inputs before compute."""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mettagrid.policy.loader import initialize_or_load_policy
from mettagrid.policy.policy import PolicySpec
from mettagrid.policy.prepare_policy_spec import load_policy_spec_from_path
from scipy import stats

from daf.config import DAFTrainingConfig
from daf.evaluation import evaluate, evaluate_policy
from daf.missions import UnknownMissionError, get_mission
from daf.policies import load_policy, resolve_class_path
from daf.policies.neural import CheckpointError, LSTMPolicy, load_weights
from daf.simulation import env_interface
from daf.training import TrainingError, train, validate_training_config
from daf.training.checkpoints import list_checkpoints

REPO_ROOT = Path(__file__).resolve().parents[1]
MISSION = "training_facility_1"
AGENTS = get_mission(MISSION).game.num_agents
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRIC_KEYS = {
    "step",
    "sps",
    "episode_reward",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "explained_variance",
}


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    # Small batches on a 2-core machine: one intra-op thread is fastest (the configs below also set
    # torch_threads=1 for train()); leave the process as found.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_config(tmp_path, run_id: str, **overrides) -> DAFTrainingConfig:
    """A tiny, fast run: 2 envs x 4 agents x 16 steps = 128 agent-steps per update."""
    values = dict(
        policy_class_path="lstm",
        missions=[MISSION],
        num_training_steps=128 * 4,
        num_envs=2,
        num_steps=16,
        bptt_horizon=8,
        num_minibatches=2,
        update_epochs=1,
        hidden_size=32,
        checkpoint_dir=str(tmp_path),
        run_id=run_id,
        seed=0,
        progress=False,
        torch_threads=1,
        device="cpu",
    )
    values.update(overrides)
    return DAFTrainingConfig(**values)


def batch_size(cfg: DAFTrainingConfig) -> int:
    return cfg.num_steps * cfg.num_envs * AGENTS


def read_metrics(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def beats_random(result_rewards: list[float], seed: int) -> tuple[bool, str]:
    rand = evaluate(PolicySpec(class_path="random"), MISSION, episodes=len(result_rewards), seed=seed)
    p = stats.ttest_ind(result_rewards, rand.rewards, equal_var=False, alternative="greater").pvalue
    info = f"trained mean {np.mean(result_rewards):.1f}, random mean {np.mean(rand.rewards):.1f}, p={p:.2g}"
    return bool(np.mean(result_rewards) > np.mean(rand.rewards) and p < 0.01), info


# --- learning --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    """One real LSTM training run shared by the learning, checkpoint and artefact tests."""
    cfg = DAFTrainingConfig(
        policy_class_path="lstm",
        missions=[MISSION],
        num_training_steps=100_000,
        checkpoint_interval=20_000,
        max_checkpoints_to_keep=2,
        checkpoint_dir=str(tmp_path_factory.mktemp("lstm_run")),
        run_id="lstm-learns",
        seed=1,
        progress=False,
        torch_threads=1,
        device="cpu",
    )
    before = torch.get_num_threads()
    try:
        return cfg, train(cfg)
    finally:
        torch.set_num_threads(before)


def test_mlp_learns_to_beat_random(tmp_path):
    cfg = DAFTrainingConfig(
        policy_class_path="mlp",
        missions=[MISSION],
        num_training_steps=80_000,
        checkpoint_dir=str(tmp_path),
        run_id="mlp-learns",
        seed=0,
        progress=False,
        torch_threads=1,
        device="cpu",
    )
    result = train(cfg)
    assert result.class_path == "daf.policies.neural.MLPPolicy"
    assert result.resumed_from_step == 0
    assert result.global_step == math.ceil(cfg.num_training_steps / batch_size(cfg)) * batch_size(cfg)
    trained = evaluate(PolicySpec(class_path="mlp", data_path=result.final_checkpoint), MISSION, episodes=20, seed=7)
    ok, info = beats_random(trained.rewards, seed=7)
    assert ok, info


def test_lstm_learns_to_beat_random(lstm_run):
    cfg, result = lstm_run
    assert result.class_path == "daf.policies.neural.LSTMPolicy"
    assert result.global_step == math.ceil(cfg.num_training_steps / batch_size(cfg)) * batch_size(cfg)
    assert result.episodes_finished > 0 and result.final_mean_reward is not None
    # The short name plus the weights file is a complete PolicySpec.
    trained = evaluate(PolicySpec(class_path="lstm", data_path=result.final_checkpoint), MISSION, episodes=20, seed=9)
    ok, info = beats_random(trained.rewards, seed=9)
    assert ok, info


def test_checkpoint_loads_through_mettagrid_loader(lstm_run):
    cfg, result = lstm_run
    ckpt = Path(result.checkpoint_dir)
    assert (ckpt / "policy_spec.json").is_file()
    assert Path(result.final_checkpoint) == ckpt / "policy.pt"

    spec = load_policy_spec_from_path(ckpt)
    assert spec.class_path == "daf.policies.neural.LSTMPolicy"
    assert Path(spec.data_path).resolve() == Path(result.final_checkpoint).resolve()
    env = env_interface([get_mission(MISSION)])
    policy = initialize_or_load_policy(env, spec)
    assert isinstance(policy, LSTMPolicy)
    assert policy.hidden_size == cfg.hidden_size
    assert state_dicts_equal(policy.network().state_dict(), load_weights(result.final_checkpoint)["state_dict"])

    # The mettagrid-loaded policy evaluates exactly like DAF's own loading of the same weights.
    via_mettagrid = evaluate_policy(policy, MISSION, episodes=3, seed=4)
    via_daf = evaluate(PolicySpec(class_path="lstm", data_path=result.final_checkpoint), MISSION, episodes=3, seed=4)
    assert [e.agent_rewards for e in via_mettagrid.episodes] == [e.agent_rewards for e in via_daf.episodes]


def test_only_max_checkpoints_are_kept(lstm_run):
    cfg, result = lstm_run
    run_dir = Path(result.run_dir)
    kept = list_checkpoints(run_dir)
    assert len(kept) == cfg.max_checkpoints_to_keep == 2
    assert kept[-1].step == result.global_step
    assert kept[0].step < kept[-1].step
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [f"step_{c.step:010d}" for c in kept]
    for c in kept:
        assert {p.name for p in c.path.iterdir()} == {
            "policy.pt",
            "trainer_state.pt",
            "policy_spec.json",
            "config.json",
        }
    saved_cfg = json.loads((run_dir / "config.json").read_text())
    assert DAFTrainingConfig(**saved_cfg) == cfg


def test_metrics_and_learning_curve(lstm_run):
    cfg, result = lstm_run
    rows = read_metrics(result.metrics_path)
    batch = batch_size(cfg)
    updates = math.ceil(cfg.num_training_steps / batch)
    assert len(rows) == updates  # one line per update
    assert [r["step"] for r in rows] == [batch * (i + 1) for i in range(updates)]
    for r in rows:
        assert METRIC_KEYS <= set(r), set(r)
        assert r["sps"] > 0
        for key in ("policy_loss", "value_loss", "entropy", "approx_kl"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (key, r)
        assert isinstance(r["explained_variance"], float)
        assert r["episode_reward"] is None or r["episode_reward"] >= 0
    rewards = [r["episode_reward"] for r in rows if r["episode_reward"] is not None]
    assert len(rewards) >= updates - 2  # episodes (120 steps) end in nearly every 64-step rollout
    assert rows[-1]["episode_reward"] == result.final_mean_reward
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5])  # the curve goes up
    assert rows[0]["entropy"] > rows[-1]["entropy"]

    png = Path(result.learning_curve)
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert width > 500 and height > 200


def _tensorboard_scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per tag, read by TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_training_writes_tensorboard_events_of_the_metrics_log(lstm_run):
    cfg, result = lstm_run
    rows = read_metrics(result.metrics_path)
    scalars = _tensorboard_scalars(result.tensorboard_dir)
    assert set(scalars) == {
        "charts/episode_reward", "charts/SPS", "charts/learning_rate", "charts/ent_coef", "losses/policy_loss",
        "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac", "losses/explained_variance",
    }  # fmt: skip
    pairs = (
        ("value_loss", "losses/value_loss"), ("lr", "charts/learning_rate"), ("entropy", "losses/entropy"),
        ("ent_coef", "charts/ent_coef"),
    )  # fmt: skip
    for key, tag in pairs:
        assert scalars[tag] == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in rows]
    # Reward points only where episodes ended in that update (the log repeats the last mean otherwise).
    ended = [(r["step"], pytest.approx(r["episode_reward"], rel=1e-6)) for r in rows if r["episodes"]]
    assert scalars["charts/episode_reward"] == ended


def test_a_resumed_run_purges_the_events_written_after_its_checkpoint(tmp_path):
    first = train(small_config(tmp_path, "tb", num_training_steps=128 * 6, checkpoint_interval=128 * 4))
    steps = [s for s, _ in _tensorboard_scalars(first.tensorboard_dir)["losses/value_loss"]]
    assert steps == [128 * i for i in range(1, 7)]
    # Lose the newest checkpoint: the run resumes from step 512 and redoes 640 and 768.
    (newest,) = [c for c in list_checkpoints(Path(first.run_dir)) if c.step == 128 * 6]
    shutil.rmtree(newest.path)
    second = train(small_config(tmp_path, "tb", num_training_steps=128 * 6, checkpoint_interval=128 * 4))
    assert second.resumed_from_step == 512
    steps = [s for s, _ in _tensorboard_scalars(second.tensorboard_dir)["losses/value_loss"]]
    assert steps == [128 * i for i in range(1, 7)]  # each step once: the first run's 640 and 768 were purged


# --- hyperparameters reach the optimizer -----------------------------------------------------------


def initial_network(cfg: DAFTrainingConfig) -> dict:
    torch.manual_seed(cfg.seed)
    env = env_interface([get_mission(m) for m in cfg.missions])
    spec = PolicySpec(
        class_path=resolve_class_path(cfg.policy_class_path),
        init_kwargs={"hidden_size": cfg.hidden_size, "seed": cfg.seed},
    )
    return {k: v.clone() for k, v in load_policy(spec, env).network().state_dict().items()}


@pytest.mark.parametrize("policy", ["mlp", "lstm"])
def test_learning_rate_reaches_the_optimizer(tmp_path, policy):
    frozen_cfg = small_config(tmp_path, f"{policy}-lr0", policy_class_path=policy, learning_rate=0.0)
    frozen = train(frozen_cfg)
    moving_cfg = small_config(tmp_path, f"{policy}-lr-default", policy_class_path=policy)
    assert moving_cfg.learning_rate == DAFTrainingConfig().learning_rate > 0
    moving = train(moving_cfg)

    start = initial_network(frozen_cfg)
    frozen_weights = load_weights(frozen.final_checkpoint)["state_dict"]
    moving_weights = load_weights(moving.final_checkpoint)["state_dict"]
    assert state_dicts_equal(frozen_weights, start)  # lr 0: not a single weight moved
    assert not state_dicts_equal(moving_weights, start)
    changed = [k for k in start if not torch.equal(moving_weights[k], start[k])]
    assert "actor.weight" in changed and "critic.weight" in changed

    # The optimizer state saved with the checkpoint carries the configured (annealed) learning rate.
    rows = read_metrics(moving.metrics_path)
    assert rows[0]["lr"] == pytest.approx(moving_cfg.learning_rate)
    assert all(r["lr"] == 0.0 for r in read_metrics(frozen.metrics_path))


def test_default_threads_are_reproducible_and_restored(tmp_path, monkeypatch):
    # Default torch_threads: acting on 1 thread, the update on every core the process may use (2 here at least,
    # so a parallel reduction could change results if it were order-dependent). Same seed, same weights; the
    # process's thread count is left as found.
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    seen: list[int] = []
    weights = []
    for run in ("a", "b"):
        cfg = small_config(tmp_path, f"threads-{run}", torch_threads=None, update_epochs=2)
        result = train(cfg, on_update=lambda step, policy: seen.append(torch.get_num_threads()))
        weights.append(load_weights(result.final_checkpoint)["state_dict"])
        assert torch.get_num_threads() == 1  # as the autouse fixture left it
    assert set(seen) == {2}  # the update's thread count was in force when it finished
    assert state_dicts_equal(*weights)


def global_rng_states() -> tuple:
    """torch's, numpy's and Python's global random states, comparable with ==."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return torch.get_rng_state().tolist(), (name, key.tolist(), pos, has_gauss, gauss), random.getstate()


def train_twice_under_other_global_seeds(directory: str) -> None:
    """The same run under two global seeds: the process's thread count and global random streams as found, the
    same weights. Run in a fresh process by the test below."""
    os.sched_getaffinity = lambda pid: {0, 1, 2}  # the run uses 1 thread (rollout) and 3 (update); the process 2
    torch.set_num_threads(2)
    weights = []
    for global_seed in (123, 456):
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        random.seed(global_seed)
        before = global_rng_states()
        cfg = small_config(Path(directory), f"scoped-{global_seed}", torch_threads=None, num_training_steps=256)
        weights.append(load_weights(train(cfg).final_checkpoint)["state_dict"])
        assert torch.get_num_threads() == 2
        assert global_rng_states() == before
    assert state_dicts_equal(*weights)  # the same run under other global seeds: the same weights


def test_train_leaves_process_state_as_found_and_ignores_global_rngs(tmp_path):
    # Prefect runs tasks in threads of one process: a run must neither move the process's thread count or global
    # random streams, nor depend on them. Checked in a fresh process: threads that earlier tests leave in this one
    # (Prefect's events client, whose websocket reconnects draw a random backoff) use Python's global stream at
    # any moment.
    code = f"from tests.test_training import train_twice_under_other_global_seeds as t; t({str(tmp_path)!r})"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_entropy_bonus_is_annealed_to_zero_or_kept_constant(tmp_path):
    # 4 updates: each starts with 1, 3/4, 1/2, 1/4 of the run left.
    assert DAFTrainingConfig().anneal_ent is False
    annealed = train(small_config(tmp_path, "ent-annealed", policy_class_path="mlp", ent_coef=0.05, anneal_ent=True))
    coefs = [r["ent_coef"] for r in read_metrics(annealed.metrics_path)]
    assert coefs == pytest.approx([0.05, 0.0375, 0.025, 0.0125])
    constant = train(small_config(tmp_path, "ent-constant", policy_class_path="mlp", ent_coef=0.05))
    assert [r["ent_coef"] for r in read_metrics(constant.metrics_path)] == pytest.approx([0.05] * 4)

    # The coefficient logged is the one the loss used: the runs differ only by it, so their weights do; with no
    # entropy bonus at all, annealing it changes nothing.
    def weights(result):
        return load_weights(result.final_checkpoint)["state_dict"]

    assert not state_dicts_equal(weights(annealed), weights(constant))
    zero = [
        train(small_config(tmp_path, f"ent-zero-{anneal}", policy_class_path="mlp", ent_coef=0.0, anneal_ent=anneal))
        for anneal in (True, False)
    ]
    assert state_dicts_equal(weights(zero[0]), weights(zero[1]))


def test_constant_learning_rate_is_saved_in_the_optimizer_state(tmp_path):
    cfg = small_config(tmp_path, "lr-const", policy_class_path="mlp", learning_rate=3e-4, anneal_lr=False)
    result = train(cfg)
    state = torch.load(Path(result.checkpoint_dir) / "trainer_state.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-4)
    assert state["global_step"] == result.global_step


def test_warm_start_loads_the_given_weights(tmp_path):
    env = env_interface([get_mission(MISSION)])
    source = tmp_path / "warm.pt"
    LSTMPolicy(env, hidden_size=32, seed=5).save_policy_data(str(source))
    start = load_weights(source)["state_dict"]
    assert not state_dicts_equal(start, initial_network(small_config(tmp_path, "x")))

    frozen = train(small_config(tmp_path, "warm-frozen", policy_data_path=str(source), learning_rate=0.0))
    assert state_dicts_equal(load_weights(frozen.final_checkpoint)["state_dict"], start)
    moving = train(small_config(tmp_path, "warm-moving", policy_data_path=str(source)))
    assert not state_dicts_equal(load_weights(moving.final_checkpoint)["state_dict"], start)


def test_weights_trained_on_one_mission_warm_start_the_next_rung_of_the_ladder(tmp_path):
    # The curriculum of bench/README.md: assembler_1's weights start assembly_line_chest, a mission with twice the
    # agents, a bigger map and two more inventory items; the network's input does not depend on the mission.
    first = train(small_config(tmp_path, "rung-1", missions=["assembler_1"]))
    start = load_weights(first.final_checkpoint)["state_dict"]
    cfg = small_config(tmp_path, "rung-2", missions=["assembly_line_chest"], policy_data_path=first.final_checkpoint)
    frozen = train(cfg.model_copy(update={"learning_rate": 0.0}))
    assert state_dicts_equal(load_weights(frozen.final_checkpoint)["state_dict"], start)
    moving = train(cfg.model_copy(update={"run_id": "rung-2-moving"}))
    assert moving.global_step >= cfg.num_training_steps
    assert not state_dicts_equal(load_weights(moving.final_checkpoint)["state_dict"], start)


def test_warm_start_with_another_hidden_size_is_trained_or_refused(tmp_path):
    env = env_interface([get_mission(MISSION)])
    source = tmp_path / "warm32.pt"
    LSTMPolicy(env, hidden_size=32).save_policy_data(str(source))
    cfg = small_config(tmp_path, "warm-mismatch", policy_data_path=str(source), hidden_size=64)
    try:
        result = train(cfg)
    except (TrainingError, CheckpointError) as exc:  # refusing the mismatch up front is a valid fix too
        assert "hidden_size" in str(exc)
        assert_nothing_trained(tmp_path, "warm-mismatch")
        return
    assert not state_dicts_equal(
        load_weights(result.final_checkpoint)["state_dict"], load_weights(source)["state_dict"]
    )


# --- resume ----------------------------------------------------------------------------------------

_CHILD = """
import sys, time
from daf.config import DAFTrainingConfig
from daf.training import train

cfg = DAFTrainingConfig.model_validate_json(sys.argv[1])
# Slow each update down so the parent can kill the run between its first checkpoint and its end.
train(cfg, on_update=lambda step, policy: time.sleep(0.25))
print("FINISHED", flush=True)
"""


def test_killed_run_resumes_from_its_last_complete_checkpoint(tmp_path):
    cfg = small_config(tmp_path, "resume-me", num_training_steps=128 * 20 + 5, checkpoint_interval=256)
    batch = batch_size(cfg)
    assert batch == 128
    run_dir = tmp_path / "resume-me"
    ckpt_root = run_dir / "checkpoints"

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, cfg.model_dump_json()],
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while not (ckpt_root.is_dir() and any(p.name.startswith("step_") for p in ckpt_root.iterdir())):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert b"FINISHED" not in out

    total = math.ceil(cfg.num_training_steps / batch) * batch
    before = list_checkpoints(run_dir)
    assert before, "the killed run left no complete checkpoint"
    last_step = before[-1].step
    assert 0 < last_step < total

    # Leftovers of a crash must never be loaded: a temp dir and a half-written dir with a non-matching name.
    fake_tmp = ckpt_root / ".step_0000099999.abc123.tmp"
    fake_tmp.mkdir()
    (fake_tmp / "policy.pt").write_bytes(b"half a file")
    half = ckpt_root / "step_0000099999_partial"
    half.mkdir()
    (half / "policy.pt").write_bytes(b"\x80\x04garbage")
    (ckpt_root / "step_0000088888.tmp").mkdir()

    result = train(cfg)
    assert result.resumed_from_step == last_step
    assert result.global_step == total
    assert result.run_id == "resume-me"
    assert list_checkpoints(run_dir)[-1].step == total
    assert not fake_tmp.exists()  # stale temp dirs are cleaned up by the next save
    # The log continues exactly where the checkpoint left it: one line per update, no duplicates or gaps.
    assert [r["step"] for r in read_metrics(result.metrics_path)] == list(range(batch, total + 1, batch))

    # Finished runs resume as a no-op at the same step.
    again = train(cfg)
    assert again.resumed_from_step == total and again.global_step == total


def test_only_partial_checkpoints_means_a_fresh_start(tmp_path):
    cfg = small_config(tmp_path, "fresh", num_training_steps=256)
    ckpt_root = tmp_path / "fresh" / "checkpoints"
    ckpt_root.mkdir(parents=True)
    fake = ckpt_root / ".step_0000099999.tmp"
    fake.mkdir()
    (fake / "policy.pt").write_bytes(b"not weights")
    (ckpt_root / "step_99999_incomplete").mkdir()
    result = train(cfg)
    assert result.resumed_from_step == 0
    assert result.global_step == 256
    assert [c.step for c in list_checkpoints(tmp_path / "fresh")] == [256]


def test_resume_survives_a_torn_metrics_line(tmp_path):
    cfg = small_config(tmp_path, "torn", policy_class_path="mlp", num_training_steps=256, checkpoint_interval=128)
    first = train(cfg)
    with open(first.metrics_path, "a") as fh:
        fh.write('{"step": 384, "sps"')  # what a crash in the middle of appending a record leaves
    result = train(cfg.model_copy(update={"num_training_steps": 512}))
    assert result.resumed_from_step == 256 and result.global_step == 512
    assert [r["step"] for r in read_metrics(result.metrics_path)] == [128, 256, 384, 512]


# --- bad inputs fail before compute ----------------------------------------------------------------


def assert_nothing_trained(tmp_path, run_id: str):
    run_dir = tmp_path / run_id
    assert not (run_dir / "metrics.jsonl").exists()
    assert not (run_dir / "checkpoints").exists()


def test_unknown_mission(tmp_path):
    cfg = small_config(tmp_path, "bad-mission", missions=["training_facilty_1"])
    with pytest.raises(
        UnknownMissionError, match="unknown mission 'training_facilty_1'. Did you mean: training_facility_1"
    ):
        train(cfg)
    assert not (tmp_path / "bad-mission").exists()
    cfg = small_config(tmp_path, "bad-eval-mission", eval_missions=["nowhere"])
    with pytest.raises(UnknownMissionError, match="unknown mission 'nowhere'"):
        validate_training_config(cfg)


def test_non_trainable_policy(tmp_path):
    cfg = small_config(tmp_path, "bad-policy", policy_class_path="baseline")
    with pytest.raises(TrainingError) as exc:
        train(cfg)
    assert "policy 'baseline' is not trainable" in str(exc.value)
    assert "NeuralPolicy" in str(exc.value)
    assert_nothing_trained(tmp_path, "bad-policy")

    cfg = small_config(tmp_path, "unknown-policy", policy_class_path="lstmm")
    with pytest.raises(TrainingError, match="unknown policy 'lstmm'. Did you mean: lstm"):
        train(cfg)
    assert_nothing_trained(tmp_path, "unknown-policy")


def test_validate_training_config_checks_the_policy_class(tmp_path):
    with pytest.raises(TrainingError, match="not trainable"):
        validate_training_config(small_config(tmp_path, "v", policy_class_path="baseline"))
    with pytest.raises(TrainingError, match="unknown policy 'lstmm'"):
        validate_training_config(small_config(tmp_path, "v", policy_class_path="lstmm"))


def test_missing_policy_data_path(tmp_path):
    missing = tmp_path / "nowhere" / "weights.pt"
    cfg = small_config(tmp_path, "missing-weights", policy_data_path=str(missing))
    with pytest.raises(CheckpointError, match=f"checkpoint {missing} does not exist"):
        train(cfg)
    assert not (tmp_path / "missing-weights").exists()


def test_corrupted_and_truncated_weights(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(
        CheckpointError, match=r"garbage\.pt cannot be loaded safely \(corrupted, truncated or unsafe\)"
    ):
        train(small_config(tmp_path, "garbage", policy_data_path=str(garbage)))
    assert not (tmp_path / "garbage").exists()

    env = env_interface([get_mission(MISSION)])
    good = tmp_path / "good.pt"
    LSTMPolicy(env, hidden_size=32).save_policy_data(str(good))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt cannot be loaded safely"):
        train(small_config(tmp_path, "truncated", policy_data_path=str(truncated)))
    assert not (tmp_path / "truncated").exists()

    not_daf = tmp_path / "not_daf.pt"
    torch.save({"weights": torch.zeros(3)}, not_daf)
    with pytest.raises(CheckpointError, match=r"not_daf\.pt is not a DAF weights file \(no state_dict\)"):
        train(small_config(tmp_path, "not-daf", policy_data_path=str(not_daf)))

    # The intact file warm-starts a run.
    result = train(small_config(tmp_path, "warm", policy_data_path=str(good), num_training_steps=128))
    assert result.global_step == 128


class _MakesMarker:
    """A pickle payload that runs code when unpickled: it creates the directory `marker`."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_payload_is_never_executed(tmp_path):
    # The payload is live: an unsafe load does run it.
    live_marker = tmp_path / "live_marker"
    live = tmp_path / "live.pt"
    torch.save({"state_dict": _MakesMarker(str(live_marker))}, live)
    torch.load(live, weights_only=False)
    assert live_marker.exists()

    marker = tmp_path / "pwned"
    torch_file = tmp_path / "evil.pt"
    torch.save({"state_dict": _MakesMarker(str(marker)), "meta": {}}, torch_file)
    raw_file = tmp_path / "evil.pkl"
    raw_file.write_bytes(pickle.dumps({"state_dict": _MakesMarker(str(marker))}))

    for path in (torch_file, raw_file):
        with pytest.raises(CheckpointError, match=rf"{path.name} cannot be loaded safely"):
            train(small_config(tmp_path, f"evil-{path.suffix[1:]}", policy_data_path=str(path)))
        assert not marker.exists()
        # Evaluation's loading path refuses it too.
        with pytest.raises(CheckpointError, match="cannot be loaded safely"):
            evaluate(PolicySpec(class_path="lstm", data_path=str(path)), MISSION, episodes=1)
        assert not marker.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_gpu(tmp_path):
    cfg = small_config(tmp_path, "cuda", device="cuda")
    with pytest.raises(TrainingError, match="device 'cuda' requested but torch sees no CUDA GPU"):
        train(cfg)
    assert not (tmp_path / "cuda").exists()


USER_POLICY = '''
import torch
from torch import nn

from daf.policies.neural import NeuralPolicy, TokenEncoder


class TinyNet(nn.Module):
    """A user's own network meeting DAF's contract (feed-forward, tanh body)."""

    recurrent = False

    def __init__(self, layout, hidden_size=64):
        super().__init__()
        self.encoder = TokenEncoder(layout, hidden_size)
        self.pi = nn.Linear(hidden_size, len(layout.action_names))
        self.v = nn.Linear(hidden_size, 1)

    def initial_state(self, batch_size, device="cpu"):
        return None

    def forward(self, obs, state=None, resets=None):
        h = torch.tanh(self.encoder(obs))
        return self.pi(h), self.v(h).squeeze(-1), None


class TinyPolicy(NeuralPolicy):
    network_class = TinyNet
'''


def test_user_policy_class_outside_daf_trains(tmp_path, monkeypatch):
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tiny.py").write_text(USER_POLICY)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = DAFTrainingConfig(
        policy_class_path="userpkg.tiny.TinyPolicy",
        missions=[MISSION],
        num_training_steps=64_000,
        hidden_size=64,
        checkpoint_dir=str(tmp_path / "ckpt"),
        run_id="user",
        seed=3,
        torch_threads=1,
    )
    result = train(cfg)
    assert result.class_path == "userpkg.tiny.TinyPolicy"
    spec = load_policy_spec_from_path(Path(result.checkpoint_dir))
    policy = initialize_or_load_policy(env_interface([get_mission(MISSION)]), spec)
    assert type(policy).__name__ == "TinyPolicy"
    trained = evaluate(
        PolicySpec(class_path=cfg.policy_class_path, data_path=result.final_checkpoint), MISSION, episodes=20, seed=11
    )
    ok, info = beats_random(trained.rewards, seed=11)
    assert ok, info


def test_resuming_a_run_under_another_config_is_refused(tmp_path):
    base = dict(policy_class_path="mlp", missions=["training_facility_1"], num_training_steps=1024, num_envs=4,
                learning_rate=0.001,
                num_steps=32, checkpoint_dir=str(tmp_path), run_id="r", progress=False, torch_threads=1)  # fmt: skip
    first = train(DAFTrainingConfig(**base))
    with pytest.raises(TrainingError, match=r"run 'r' .*another config \(learning_rate: 0.001 -> 0.01\)"):
        train(DAFTrainingConfig(**{**base, "learning_rate": 0.01}))
    with pytest.raises(TrainingError, match=r"missions: \['training_facility_1'\] -> \['assembler_1'\]"):
        train(DAFTrainingConfig(**{**base, "missions": ["assembler_1"]}))
    # Longer, under the same settings: the run continues from its checkpoint.
    longer = train(DAFTrainingConfig(**{**base, "num_training_steps": 2048}))
    assert longer.resumed_from_step == first.global_step and longer.global_step >= 2048


def test_resuming_after_the_mission_file_was_edited_at_the_same_path_is_refused(tmp_path):
    mission = tmp_path / "mission.yaml"
    mission.write_text("base: training_facility_1\nmax_steps: 40\n")
    base = dict(policy_class_path="mlp", missions=[str(mission)], num_training_steps=1024, num_envs=4, num_steps=32,
                checkpoint_dir=str(tmp_path / "runs"), run_id="r", progress=False, torch_threads=1)  # fmt: skip
    first = train(DAFTrainingConfig(**base))
    mission.write_text("base: assembler_1\nmax_steps: 40\n")  # another task under the same path
    with pytest.raises(TrainingError, match=rf"run 'r' .*was trained on other content of mission\(s\) {mission}"):
        train(DAFTrainingConfig(**{**base, "num_training_steps": 2048}))
    mission.write_text("base: training_facility_1\nmax_steps: 40\n")  # restored: the run continues
    longer = train(DAFTrainingConfig(**{**base, "num_training_steps": 2048}))
    assert longer.resumed_from_step == first.global_step


def test_a_run_directory_is_trained_by_one_process_at_a_time(tmp_path):
    from daf.locks import directory_lock

    config = DAFTrainingConfig(policy_class_path="mlp", num_training_steps=512, num_envs=4, num_steps=32,
                               checkpoint_dir=str(tmp_path), run_id="busy", progress=False)  # fmt: skip
    (tmp_path / "busy").mkdir()
    with directory_lock(tmp_path / "busy", "another trainer", RuntimeError):
        with pytest.raises(TrainingError, match=r"training run 'busy' is already running in another process"):
            train(config)
    assert not list((tmp_path / "busy").glob("checkpoints/step_*"))
    assert train(config).global_step >= 512  # free again once the holder is gone
