"""Evaluation: seeded, independent of batch layout, every agent driven by the policy under test."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
from mettagrid.policy.policy import PolicySpec

from daf.evaluation import EvaluationResult, episode_seed, evaluate, evaluate_policy, has_batch_path
from daf.missions import MISSIONS, UnknownMissionError, get_mission
from daf.policies import PolicyResolutionError, load_policy
from daf.simulation import env_interface


@pytest.fixture
def one_torch_thread():
    """Tiny per-step batches: extra intra-op threads only add contention on a 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def outcomes(result: EvaluationResult) -> list[tuple]:
    return [(e.seed, e.steps, e.agent_rewards, e.agent_stats) for e in result.episodes]


def test_same_seed_same_numbers_and_other_seed_other_maps():
    a = evaluate(PolicySpec(class_path="random"), "training_facility_1", episodes=5, seed=3)
    b = evaluate(PolicySpec(class_path="random"), "training_facility_1", episodes=5, seed=3)
    assert outcomes(a) == outcomes(b)
    assert a.rewards == b.rewards
    c = evaluate(PolicySpec(class_path="random"), "training_facility_1", episodes=5, seed=4)
    assert {e.seed for e in c.episodes}.isdisjoint({e.seed for e in a.episodes})
    assert c.rewards != a.rewards


@pytest.mark.parametrize(
    ("policy", "mission"),
    [("baseline", "assembler_2"), ("random", "training_facility_1"), ("baseline", "training_facility_2")],
)
def test_sequential_equals_parallel(policy, mission):
    spec = PolicySpec(class_path=policy)
    seq = evaluate(spec, mission, episodes=6, seed=8, concurrent_episodes=1)
    par = evaluate(spec, mission, episodes=6, seed=8, concurrent_episodes=4)
    assert outcomes(seq) == outcomes(par)
    assert sum(seq.rewards) > 0


def test_sequential_equals_parallel_for_untrained_lstm(one_torch_thread):
    env = env_interface([get_mission("training_facility_1")])
    torch.manual_seed(123)
    policy = load_policy(PolicySpec(class_path="lstm"), env)
    seq = evaluate_policy(policy, "training_facility_1", episodes=6, seed=2, concurrent_episodes=1)
    par = evaluate_policy(policy, "training_facility_1", episodes=6, seed=2, concurrent_episodes=4)
    many = evaluate_policy(policy, "training_facility_1", episodes=6, seed=2, concurrent_episodes=6)
    assert outcomes(seq) == outcomes(par) == outcomes(many)

    # Through the spec path too (random init: same torch seed -> same network).
    torch.manual_seed(123)
    via_spec_seq = evaluate(PolicySpec(class_path="lstm"), "training_facility_1", 6, seed=2, concurrent_episodes=1)
    torch.manual_seed(123)
    via_spec_par = evaluate(PolicySpec(class_path="lstm"), "training_facility_1", 6, seed=2, concurrent_episodes=3)
    assert outcomes(via_spec_seq) == outcomes(via_spec_par) == outcomes(seq)
    # The stochastic network does act: agents move around and collect something over 6 episodes.
    assert len({tuple(e.agent_rewards) for e in seq.episodes}) > 1


def test_custom_per_agent_policy(per_agent_package):
    module = importlib.import_module(per_agent_package)
    module.STEP_CALLS.clear()
    spec = PolicySpec(class_path=f"{per_agent_package}.PerAgentWalker", init_kwargs={"seed": 1})
    env = env_interface([get_mission("training_facility_1")])
    assert not has_batch_path(load_policy(spec, env))

    episodes, mission = 6, MISSIONS["training_facility_1"]
    result = evaluate(spec, "training_facility_1", episodes=episodes, seed=5, policy_name="walker")
    assert result.policy_name == "walker" and result.class_path == spec.class_path
    assert len(result.episodes) == episodes
    for ep in result.episodes:
        assert ep.steps == mission.max_steps
        assert len(ep.agent_rewards) == mission.num_agents
    # Every agent of every step was asked for an action through mettagrid's per-agent path.
    calls = module.STEP_CALLS
    assert len(calls) == episodes * mission.max_steps * mission.num_agents
    assert np.bincount(calls).tolist() == [episodes * mission.max_steps] * mission.num_agents
    # A random walker finds heart sources; the same maps as a batched policy.
    assert np.mean(result.rewards) > 0
    assert [e.seed for e in result.episodes] == [episode_seed(5, "training_facility_1", i) for i in range(episodes)]
    assert result.agent_steps == episodes * mission.max_steps * mission.num_agents
    # Reproducible too (the agent policies reseed on reset).
    again = evaluate(spec, "training_facility_1", episodes=episodes, seed=5)
    assert outcomes(again) == outcomes(result)

    noop = evaluate(PolicySpec(class_path=f"{per_agent_package}.PerAgentNoop"), "training_facility_1", 3, seed=5)
    assert noop.rewards == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("mission", ["training_facility_1", "assembly_line_chest"])
def test_every_agent_is_driven_by_the_policy(mission):
    spec = MISSIONS[mission]
    result = evaluate(PolicySpec(class_path="baseline"), mission, episodes=4, seed=1)
    per_agent = np.array([e.agent_rewards for e in result.episodes])
    assert per_agent.shape == (4, spec.num_agents)
    if mission == "training_facility_1":
        # A noop agent would score 0: every agent slot scores, so every one is played by the baseline.
        assert (per_agent.sum(0) > 0).all(), per_agent
    assert result.agent_steps == 4 * spec.max_steps * spec.num_agents


def test_episode_seeds_do_not_depend_on_the_policy():
    a = evaluate(PolicySpec(class_path="baseline"), "assembler_1", episodes=4, seed=77)
    b = evaluate(PolicySpec(class_path="noop"), "assembler_1", episodes=4, seed=77, concurrent_episodes=2)
    expected = [episode_seed(77, "assembler_1", i) for i in range(4)]
    assert [e.seed for e in a.episodes] == [e.seed for e in b.episodes] == expected
    assert len(set(expected)) == 4
    # Stable across processes: a fixed hash of (seed, mission, episode).
    assert episode_seed(77, "assembler_1", 0) == episode_seed(77, "assembler_1", 0)
    assert episode_seed(77, "assembler_1", 0) != episode_seed(77, "assembler_2", 0)


def test_unknown_mission_and_policy_errors():
    with pytest.raises(
        UnknownMissionError, match="unknown mission 'training_facilty_1'. Did you mean: training_facility_1"
    ):
        evaluate(PolicySpec(class_path="baseline"), "training_facilty_1", episodes=2)
    with pytest.raises(PolicyResolutionError, match="unknown policy 'basline'. Did you mean: baseline"):
        evaluate(PolicySpec(class_path="basline"), "training_facility_1", episodes=2)
    with pytest.raises(PolicyResolutionError, match="cannot import module 'no_such_module_daf'"):
        evaluate(PolicySpec(class_path="no_such_module_daf.P"), "training_facility_1", episodes=2)
    with pytest.raises(ValueError, match="episodes must be >= 1, got 0"):
        evaluate(PolicySpec(class_path="baseline"), "training_facility_1", episodes=0)
    with pytest.raises(ValueError, match="concurrent_episodes must be >= 1, got 0"):
        evaluate(PolicySpec(class_path="baseline"), "training_facility_1", episodes=1, concurrent_episodes=0)


def test_result_serialisation_and_progress():
    calls: list[tuple[int, int]] = []
    result = evaluate(
        PolicySpec(class_path="baseline"),
        "training_facility_1",
        episodes=5,
        seed=1,
        concurrent_episodes=2,
        progress=lambda event: calls.append((event.done, event.total)),
    )
    assert calls == [(i, 5) for i in range(1, 6)]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["rewards"] == result.rewards
    back = EvaluationResult.from_dict(data)
    assert outcomes(back) == outcomes(result)
    assert back.policy_name == "baseline" and back.mission == "training_facility_1" and back.seed == 1
    assert result.agent_steps_per_second > 0
    assert result.rewards == [e.total_reward for e in result.episodes]
