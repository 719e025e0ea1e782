"""reward_shaping (daf/reward_shaping.py): training environments pay for the items leading to the goal, the same
episodes score the mission's own reward once the shaping is taken back out, and bad shaping is refused first."""

from __future__ import annotations

import json

import numpy as np
import pytest

from daf.config import ConfigError, DAFTrainingConfig
from daf.missions import get_mission
from daf.reward_shaping import mission_reward, shaped
from daf.training import TrainingError, train
from daf.training.validation import validate_training_config
from daf.vecenv import VecEnv
from tests.test_training import _tensorboard_scalars

WEIGHTS = {"ore": 0.25, "crystal": 0.125}


def test_shaping_pays_for_items_and_mission_reward_takes_it_back_out():
    missions = ["assembler_2", "training_facility_1"]  # a mix: training_facility_1 has neither item
    plain = VecEnv(missions, 4, seed=5)
    shaping = VecEnv(missions, 4, seed=5, configs={m: shaped(get_mission(m), WEIGHTS) for m in missions})
    try:
        rng = np.random.default_rng(0)
        paid = []
        for _ in range(520):  # two assembler_2 episodes (250 steps) per environment, four of training_facility_1
            actions = rng.integers(0, len(plain.env_info.all_action_names), plain.num_rows)
            rewards, shaped_rewards = plain.step(actions), shaping.step(actions)
            paid.append(shaped_rewards - rewards)
        ours, theirs = plain.pop_finished(), shaping.pop_finished()
    finally:
        plain.close()
        shaping.close()
    # Shaping changes rewards, not the game: the same actions play the same episodes.
    assert [(m, o.seed, o.steps, o.agent_stats) for m, o in theirs] == [
        (m, o.seed, o.steps, o.agent_stats) for m, o in ours
    ]
    assert len(ours) == 12
    paid = np.array(paid)
    # Every step pays an item's weight when it is picked up and takes it back when the assembler spends it.
    assert set(np.round(np.unique(paid), 6)) <= {0.0, 0.25, 0.125, -0.25, -0.125, -0.375, 0.375}
    assert (paid > 0).sum() > 20 and (paid < 0).sum() > 0  # random walkers do pick items up and craft
    for (mission, plain_outcome), (_, outcome) in zip(ours, theirs):
        assert mission_reward(outcome, WEIGHTS) == pytest.approx(plain_outcome.total_reward, abs=1e-5)
        if mission == "training_facility_1":
            assert outcome.agent_rewards == plain_outcome.agent_rewards
    assert any(o.total_reward > p.total_reward for (_, p), (_, o) in zip(ours, theirs))


def test_a_shaped_run_logs_the_missions_reward_and_the_shaped_one(tmp_path):
    config = DAFTrainingConfig(
        policy_class_path="mlp", missions=["assembler_1"], num_envs=4, num_steps=100, bptt_horizon=4,
        num_training_steps=16 * 100 * 6,
        reward_shaping={"ore": 0.5}, checkpoint_dir=str(tmp_path), progress=False,
    )  # fmt: skip
    result = train(config)
    rows = [json.loads(line) for line in open(result.metrics_path)]
    ended = [r for r in rows if r["episodes"]]
    assert len(ended) == 3  # 200-step episodes end every second update
    # With inventories starting empty, what shaping pays over an episode is >= 0; random early policies pick ore.
    assert all(r["shaped_episode_reward"] >= r["episode_reward"] for r in ended)
    assert any(r["shaped_episode_reward"] > r["episode_reward"] for r in ended)
    assert result.final_mean_reward == ended[-1]["episode_reward"]
    scalars = _tensorboard_scalars(result.tensorboard_dir)
    assert scalars["charts/shaped_episode_reward"] == [
        (r["step"], pytest.approx(r["shaped_episode_reward"], rel=1e-6)) for r in ended
    ]
    assert scalars["charts/episode_reward"] == [
        (r["step"], pytest.approx(r["episode_reward"], rel=1e-6)) for r in ended
    ]


def test_an_unshaped_run_logs_no_shaped_reward(tmp_path):
    config = DAFTrainingConfig(
        policy_class_path="mlp", missions=["training_facility_1"], num_envs=2, num_steps=120, bptt_horizon=8,
        num_training_steps=8 * 120, checkpoint_dir=str(tmp_path), progress=False,
    )  # fmt: skip
    rows = [json.loads(line) for line in open(train(config).metrics_path)]
    assert rows and all("shaped_episode_reward" not in r for r in rows)


@pytest.mark.parametrize(
    "shaping, message",
    [
        ({"ore": 0}, r"greater than 0"),
        ({"ore": -0.1}, r"greater than 0"),
        ({"ore": 1.5}, r"less than or equal to 1"),
        ({"ore": float("nan")}, r"finite"),
        ({"ore": float("inf")}, r"finite"),
        ({"ore": "lots"}, r"reward_shaping"),
        ({"": 0.1}, r"at least 1 character"),
        (["ore"], r"reward_shaping"),
        (0.25, r"reward_shaping"),
    ],
)
def test_bad_shaping_values_are_refused_by_the_config(shaping, message):
    with pytest.raises(ConfigError, match=message):
        DAFTrainingConfig.from_dict({"missions": ["assembler_1"], "reward_shaping": shaping})


@pytest.mark.parametrize(
    "missions, shaping, message",
    [
        (
            ["assembler_1"],
            {"gold": 0.1},
            r"no training mission has an inventory item 'gold' \(their items: \['heart', ",
        ),
        (["training_facility_1"], {"ore": 0.1}, r"no training mission has an inventory item 'ore'"),
        (["assembler_1"], {"heart": 0.1}, r"'heart' is what mission 'assembler_1' rewards already"),
        (["training_facility_1", "assembler_1"], {"heart": 0.1}, r"mission 'training_facility_1' rewards already"),
    ],
)
def test_shaping_items_the_missions_lack_or_reward_is_refused_before_compute(tmp_path, missions, shaping, message):
    config = DAFTrainingConfig(missions=missions, reward_shaping=shaping, checkpoint_dir=str(tmp_path))
    with pytest.raises(TrainingError, match=message):
        validate_training_config(config)
    with pytest.raises(TrainingError, match=message):
        train(config)
    assert not any(tmp_path.iterdir())  # refused before a run directory was made


def test_the_chest_missions_heart_is_shapeable_there():
    # assembly_line_chest scores deposits, not hearts held: a heart is a step on the way.
    game = shaped(get_mission("assembly_line_chest"), {"heart": 0.25, "ore": 0.1})
    assert {"shaping/heart", "shaping/ore"} <= set(game.game.agent.rewards)
    assert shaped(get_mission("training_facility_1"), {"ore": 0.1}) == get_mission("training_facility_1")
