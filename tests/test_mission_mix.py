"""The training mix (`mission_weights`, daf.mission_mix): each mission's share of the environments, interleaved, the
same wherever the environments step, and refused before compute when a listed mission would get no environment."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from daf.config import ConfigError, DAFTrainingConfig
from daf.mission_mix import assign_missions
from daf.training import train
from daf.vecenv import EnvWorkerPool, VecEnv


def test_equal_weights_are_round_robin():
    missions = ["a", "b", "c"]
    assert assign_missions(missions, None, 7) == [missions[i % 3] for i in range(7)]
    assert assign_missions(missions, [2.5, 2.5, 2.5], 7) == assign_missions(missions, None, 7)


@pytest.mark.parametrize("weights", [[1, 3], [0.2, 0.3, 0.5], [5, 1, 1, 1], [1, 1e3]])
@pytest.mark.parametrize("num_envs", [8, 17, 64, 1000])
def test_every_prefix_of_slots_keeps_each_missions_share_within_one_slot(weights, num_envs):
    missions = [f"m{i}" for i in range(len(weights))]
    slots = assign_missions(missions, weights, num_envs)
    share = np.asarray(weights) / sum(weights)
    counts = np.zeros(len(missions))
    for n, mission in enumerate(slots, start=1):
        counts[missions.index(mission)] += 1
        assert np.all(np.abs(counts - n * share) < 1.0 + 1e-9), (n, counts, n * share)


def test_missions_are_interleaved_not_grouped():
    slots = assign_missions(["a", "b"], [1, 3], 16)
    assert slots[:4].count("a") == 1 and max(len(run) for run in "".join(slots).split("a")) <= 3


def test_the_pool_and_the_learners_process_run_the_same_mix():
    missions, weights = ["training_facility_1", "training_facility_2"], [1.0, 3.0]
    local = VecEnv(missions, 8, seed=0, weights=weights)
    pool = EnvWorkerPool(missions, 8, seed=0, num_workers=2, weights=weights)
    try:
        assert Counter(local.slot_missions) == {"training_facility_1": 2, "training_facility_2": 6}
        assert np.array_equal(pool.observations, local.observations)
        actions = np.zeros(local.num_rows, dtype=np.int64)
        for _ in range(201):  # past the end of every slot's first episode (120 and 200 steps)
            assert np.array_equal(pool.step(actions), local.step(actions))
        ours, theirs = local.pop_finished(), pool.pop_finished()
        assert Counter(m for m, _ in ours) == {"training_facility_1": 2, "training_facility_2": 6}
        assert [(m, o.seed) for m, o in theirs] == [(m, o.seed) for m, o in ours]
    finally:
        local.close()
        pool.close()


def test_a_run_trains_on_its_mix(tmp_path):
    config = DAFTrainingConfig(
        policy_class_path="mlp", missions=["training_facility_1", "training_facility_2"], mission_weights=[3, 1],
        num_envs=4, num_steps=48, num_training_steps=4 * 4 * 48 * 3, checkpoint_dir=str(tmp_path), progress=False,
    )  # fmt: skip
    result = train(config)
    # 144 steps per environment: the three training_facility_1 environments (120 steps) end one episode each, the
    # training_facility_2 one (200 steps) none.
    assert result.episodes_finished == 3
    assert result.global_step == 2304


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"mission_weights": [1, 2]}, r"mission_weights has 2 weights for 1 missions"),
        ({"missions": ["training_facility_1", "assembler_1"], "mission_weights": [1, 0]}, r"greater than 0"),
        ({"missions": ["training_facility_1", "assembler_1"], "mission_weights": [1, -2]}, r"greater than 0"),
        ({"mission_weights": [float("nan")]}, r"finite"),
        ({"mission_weights": [float("inf")]}, r"finite"),
        ({"mission_weights": ["heavy"]}, r"mission_weights"),
        ({"mission_weights": 3}, r"mission_weights"),
        (
            {"missions": ["training_facility_1", "assembler_1"], "mission_weights": [1, 0.01], "num_envs": 16},
            r"no environment runs \['assembler_1'\]: raise num_envs or its weight",
        ),
        (
            {"missions": ["training_facility_1", "assembler_1", "assembler_2"], "num_envs": 2},
            r"with num_envs 2, no environment runs \['assembler_2'\]: raise num_envs$",
        ),
    ],
)
def test_a_bad_mix_is_refused_before_compute(settings, message):
    with pytest.raises(ConfigError, match=message):
        DAFTrainingConfig.from_dict(settings)
