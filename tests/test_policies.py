"""Policies: name resolution, mettagrid's loader, both stepping paths, seeded randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mettagrid.policy.loader import initialize_or_load_policy
from mettagrid.policy.policy import AgentPolicy, MultiAgentPolicy, PolicySpec
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator import Action

from daf.missions import get_mission
from daf.policies import (
    DAF_POLICIES,
    PolicyResolutionError,
    check_spec,
    list_policies,
    load_policy,
    load_policy_class,
    resolve_class_path,
)
from daf.policies.base import DAFPolicy
from daf.policies.neural import CheckpointError, LSTMPolicy, MLPPolicy, NeuralPolicy, load_weights
from daf.policies.rng import row_seeds
from daf.policies.scripted import BaselinePolicy, NoopPolicy, RandomPolicy
from daf.policies.tokens import MOVES, agent_observation_array
from daf.simulation import SimBatch

EXPECTED_CLASSES = {
    "random": RandomPolicy,
    "noop": NoopPolicy,
    "baseline": BaselinePolicy,
    "lstm": LSTMPolicy,
    "mlp": MLPPolicy,
}


@pytest.fixture(scope="module")
def tf1_config():
    return get_mission("training_facility_1")


@pytest.fixture(scope="module")
def pei(tf1_config):
    return PolicyEnvInterface.from_mg_cfg(tf1_config)


def started_batch(cfg, seed: int) -> SimBatch:
    batch = SimBatch([cfg])
    batch.start(0, seed)
    return batch


# --- registry --------------------------------------------------------------------------------------


def test_short_names_resolve_to_daf_classes():
    assert set(list_policies()) == set(EXPECTED_CLASSES)
    for short, cls in EXPECTED_CLASSES.items():
        assert resolve_class_path(short) == f"{cls.__module__}.{cls.__qualname__}"
        assert load_policy_class(short) is cls
        # The full dotted path resolves to the same class.
        assert load_policy_class(DAF_POLICIES[short]) is cls


def test_mettagrid_registry_is_the_fallback_for_other_short_names():
    assert resolve_class_path("bitworld_random_action") == "mettagrid.policy.bitworld.BitWorldRandomActionPolicy"
    # DAF's short names win over mettagrid's (which also registers 'random' and 'noop').
    assert resolve_class_path("random") == "daf.policies.scripted.RandomPolicy"
    assert resolve_class_path("noop") == "daf.policies.scripted.NoopPolicy"


def test_dotted_class_path_from_a_user_package(per_agent_package, pei):
    path = f"{per_agent_package}.PerAgentWalker"
    assert resolve_class_path(path) == path
    cls = load_policy_class(path)
    assert cls.__name__ == "PerAgentWalker" and issubclass(cls, MultiAgentPolicy)
    policy = load_policy(PolicySpec(class_path=path, init_kwargs={"seed": 3}), pei)
    assert type(policy) is cls and policy.seed == 3
    assert isinstance(policy.agent_policy(0), AgentPolicy)


def test_unknown_short_name_suggests_close_names():
    with pytest.raises(PolicyResolutionError) as exc:
        load_policy_class("baselin")
    msg = str(exc.value)
    assert "unknown policy 'baselin'" in msg
    assert "Did you mean: baseline" in msg
    assert "Known short names: random, noop, baseline, lstm, mlp" in msg


def test_class_path_not_found(per_agent_package):
    with pytest.raises(PolicyResolutionError) as exc:
        load_policy_class("no_such_daf_module_xyz.Policy")
    assert "cannot import module 'no_such_daf_module_xyz'" in str(exc.value)

    with pytest.raises(PolicyResolutionError) as exc:
        load_policy_class(f"{per_agent_package}.Missing")
    # Found by reading the module's source: a module that does not name the class is not imported (run) at all.
    assert f"module '{per_agent_package}' (" in str(exc.value)
    assert "has no class, assignment or import named 'Missing' at its top level" in str(exc.value)


def test_class_that_is_not_a_multi_agent_policy(per_agent_package):
    path = f"{per_agent_package}.NotAPolicy"
    with pytest.raises(PolicyResolutionError) as exc:
        load_policy_class(path)
    assert f"{path} is not a mettagrid.policy.policy.MultiAgentPolicy subclass" in str(exc.value)
    # A module attribute that is not a class at all is rejected the same way.
    with pytest.raises(PolicyResolutionError, match="is not a mettagrid.policy.policy.MultiAgentPolicy subclass"):
        load_policy_class(f"{per_agent_package}.STEP_CALLS")


def test_missing_data_path(tmp_path, pei):
    missing = tmp_path / "weights" / "missing.pt"
    spec = PolicySpec(class_path="lstm", data_path=str(missing))
    with pytest.raises(PolicyResolutionError) as exc:
        check_spec(spec)
    assert f"data_path {missing} does not exist" in str(exc.value)
    with pytest.raises(PolicyResolutionError, match="does not exist"):
        load_policy(spec, pei)


# --- mettagrid's own loader ------------------------------------------------------------------------


@pytest.mark.parametrize("short", list(EXPECTED_CLASSES))
def test_daf_policies_load_through_mettagrid_loader_and_step(short, tf1_config, pei):
    policy = initialize_or_load_policy(pei, PolicySpec(class_path=DAF_POLICIES[short]))
    assert type(policy) is EXPECTED_CLASSES[short]
    assert isinstance(policy, DAFPolicy)

    batch = started_batch(tf1_config, seed=17)
    try:
        sim = batch.sims[0]
        agents = [policy.agent_policy(i) for i in range(sim.num_agents)]
        for agent in agents:
            agent.reset()
        for _ in range(5):
            for i, obs in enumerate(sim.observations()):
                action = agents[i].step(obs)
                assert isinstance(action, Action)
                assert action.name in pei.action_names
                sim.agent(i).set_action(action)
            sim.step()
        assert sim.current_step == 5
    finally:
        batch.close()


def test_neural_weights_round_trip_through_mettagrid_loader(tmp_path, pei):
    torch.manual_seed(0)
    trained = LSTMPolicy(pei, hidden_size=32)
    path = tmp_path / "w.pt"
    trained.save_policy_data(str(path))
    # Default hidden_size is 128: the weights file's metadata wins.
    loaded = initialize_or_load_policy(pei, PolicySpec(class_path=DAF_POLICIES["lstm"], data_path=str(path)))
    assert isinstance(loaded, NeuralPolicy) and loaded.hidden_size == 32
    for (k1, v1), (k2, v2) in zip(trained.network().state_dict().items(), loaded.network().state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    # Weights of another architecture are refused with the file named.
    with pytest.raises(CheckpointError, match=r"w\.pt: weights do not fit MLPPolicy"):
        initialize_or_load_policy(pei, PolicySpec(class_path=DAF_POLICIES["mlp"], data_path=str(path)))
    # Weights of an earlier version of the same network (the LSTM before its hidden layer) are refused as such.
    payload = load_weights(path)
    payload["meta"]["network"] = 1
    torch.save(payload, tmp_path / "v1.pt")
    with pytest.raises(
        CheckpointError,
        match=r"v1\.pt: written by version 1 of LSTMPolicy's network, this DAF builds "
        r"version 2 \(its layers changed\): retrain the policy",
    ):
        initialize_or_load_policy(pei, PolicySpec(class_path=DAF_POLICIES["lstm"], data_path=str(tmp_path / "v1.pt")))


def test_agent_observation_matches_the_raw_buffer(tf1_config):
    batch = started_batch(tf1_config, seed=3)
    try:
        n_tokens = batch.observations.shape[1]
        for i, obs in enumerate(batch.sims[0].observations()):
            np.testing.assert_array_equal(agent_observation_array(obs, n_tokens), batch.observations[i])
    finally:
        batch.close()


# --- random policy ---------------------------------------------------------------------------------


def random_actions(pei, cfg, seed: int, steps: int = 60) -> np.ndarray:
    policy = RandomPolicy(pei, seed=seed)
    batch = started_batch(cfg, seed=1)
    rows = np.arange(batch.num_rows)
    policy.reset_rows(rows, row_seeds(seed, len(rows)))
    out = []
    try:
        for _ in range(steps):
            policy.step_batch(batch.observations, batch.actions)
            out.append(batch.actions.copy())
            batch.step([0])
    finally:
        batch.close()
    return np.stack(out)


def test_random_policy_uses_only_noop_and_moves_and_is_reproducible(tf1_config, pei):
    a = random_actions(pei, tf1_config, seed=7)
    names = {pei.all_action_names[i] for i in np.unique(a)}
    assert names == {"noop", *MOVES}  # every allowed action is used, nothing else
    np.testing.assert_array_equal(a, random_actions(pei, tf1_config, seed=7))
    assert not np.array_equal(a, random_actions(pei, tf1_config, seed=8))
    # Rows are independent streams: agents do not move in lockstep.
    assert not all(np.array_equal(a[:, 0], a[:, j]) for j in range(1, a.shape[1]))


def test_random_agent_policy_is_reproducible_per_seed(tf1_config, pei):
    def run(seed: int) -> list[str]:
        policy = initialize_or_load_policy(
            pei, PolicySpec(class_path=DAF_POLICIES["random"], init_kwargs={"seed": seed})
        )
        batch = started_batch(tf1_config, seed=2)
        try:
            sim = batch.sims[0]
            agents = [policy.agent_policy(i) for i in range(sim.num_agents)]
            for agent in agents:
                agent.reset()
            names = []
            for _ in range(40):
                for i, obs in enumerate(sim.observations()):
                    action = agents[i].step(obs)
                    names.append(action.name)
                    sim.agent(i).set_action(action)
                sim.step()
            return names
        finally:
            batch.close()

    first = run(5)
    assert set(first) <= {"noop", *MOVES}
    assert first == run(5)
    assert first != run(6)


# --- both stepping paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("mission", ["training_facility_2", "assembly_line_chest"])
def test_step_batch_equals_per_agent_path_for_baseline(mission):
    cfg = get_mission(mission)
    pei = PolicyEnvInterface.from_mg_cfg(cfg)
    batched, per_agent = BaselinePolicy(pei, seed=1), BaselinePolicy(pei, seed=1)
    batch = started_batch(cfg, seed=42)
    rows = np.arange(batch.num_rows)
    seeds = row_seeds(1234, len(rows))
    batched.reset_rows(rows, seeds)
    per_agent.reset_rows(rows, seeds)
    agents = [per_agent.agent_policy(i) for i in range(batch.num_rows)]
    try:
        sim = batch.sims[0]
        moved = 0
        for _ in range(80):
            batched.step_batch(batch.observations, batch.actions)
            expected = [agents[i].step(obs).name for i, obs in enumerate(sim.observations())]
            assert [pei.all_action_names[a] for a in batch.actions] == expected
            moved += sum(name != "noop" for name in expected)
            batch.step([0])
        assert moved > 0
    finally:
        batch.close()


def test_reset_rows_restarts_the_row_stream(tf1_config, pei):
    policy = RandomPolicy(pei, seed=0)
    batch = started_batch(tf1_config, seed=1)
    rows = np.arange(batch.num_rows)
    try:
        policy.reset_rows(rows, row_seeds(99, len(rows)))
        first = [policy.act(rows, batch.observations).copy() for _ in range(20)]
        policy.reset_rows(rows, row_seeds(99, len(rows)))
        again = [policy.act(rows, batch.observations).copy() for _ in range(20)]
    finally:
        batch.close()
    np.testing.assert_array_equal(np.stack(first), np.stack(again))


def test_lstm_sequence_pass_equals_stepping_one_step_at_a_time(tf1_config, pei):
    # Training runs whole sequences through a fused LSTM; acting steps the cell. Both must agree, resets included.
    import torch

    from daf.simulation import SimBatch

    batch = SimBatch([tf1_config, tf1_config])
    batch.start(0, 1)
    batch.start(1, 2)
    rng = np.random.default_rng(0)
    observations = []
    for _ in range(6):
        observations.append(torch.as_tensor(batch.observations.copy()))
        batch.actions[:] = rng.integers(0, 5, batch.num_rows)
        batch.step([0, 1])
    batch.close()
    obs = torch.stack(observations)  # (L, B, tokens, 3)
    resets = torch.zeros(obs.shape[:2])
    resets[0, :3] = 1.0
    resets[3, 2:6] = 1.0
    net = LSTMPolicy(pei, hidden_size=16, seed=4).network()
    torch.manual_seed(0)
    state = tuple(torch.randn(obs.shape[1], 16) for _ in range(2))

    logits, values, (h, c) = net(obs, state, resets)
    step_state, step_logits, step_values = state, [], []
    for t in range(obs.shape[0]):
        lt, vt, step_state = net(obs[t : t + 1], step_state, resets[t : t + 1])
        step_logits.append(lt[0])
        step_values.append(vt[0])
    torch.testing.assert_close(logits, torch.stack(step_logits), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values, torch.stack(step_values), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, step_state[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, step_state[1], atol=1e-5, rtol=1e-5)
