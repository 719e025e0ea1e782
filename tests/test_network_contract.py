"""User networks outside DAF against the contract (daf/policies/neural.py), checked before any compute."""

from __future__ import annotations

from pathlib import Path

import pytest

from daf.config import DAFTrainingConfig
from daf.training import TrainingError, train, validate_training_config

NETWORKS = """
from types import SimpleNamespace

import torch
from mettagrid.policy.policy import MultiAgentPolicy
from torch import nn

from daf.policies.neural import NeuralPolicy

TOKENS = 64  # a flat projection of the first 64 tokens, as mettagrid's own `stateless` policy does


class FlatNet(nn.Module):
    recurrent = False  # and no `variable_tokens`: it needs the full token count in every call

    def __init__(self, layout, hidden_size=128):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(TOKENS * 3, hidden_size), nn.ReLU())
        self.actor = nn.Linear(hidden_size, len(layout.action_names))
        self.critic = nn.Linear(hidden_size, 1)

    def initial_state(self, batch_size, device="cpu"):
        return None

    def forward(self, obs, state=None, resets=None):
        x = obs[:, :, :TOKENS].float().flatten(2) / 255.0
        h = self.body(x)
        return self.actor(h), self.critic(h).squeeze(-1), None


class TorchLayoutGRU(FlatNet):
    recurrent = True

    def __init__(self, layout, hidden_size=128):
        super().__init__(layout, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size)

    def initial_state(self, batch_size, device="cpu"):
        return (torch.zeros(1, batch_size, self.gru.hidden_size, device=device),)  # PyTorch's (layers, B, H)

    def forward(self, obs, state, resets=None):
        h, new = self.gru(self.body(obs[:, :, :TOKENS].float().flatten(2) / 255.0), state[0])
        return self.actor(h), self.critic(h).squeeze(-1), (new,)


class StepFlatNet(nn.Module):  # PufferLib / CoGames style: one step, (B, tokens, 3) in, (logits, values) out
    def __init__(self, layout, hidden_size=128):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(TOKENS * 3, hidden_size), nn.ReLU())
        self.actor = nn.Linear(hidden_size, len(layout.action_names))
        self.critic = nn.Linear(hidden_size, 1)

    def forward_eval(self, observations, state=None):
        h = self.body(observations[:, :TOKENS].float().flatten(1) / 255.0)
        return self.actor(h), self.critic(h).squeeze(-1)


class StepGRUNet(StepFlatNet):  # the same, recurrent: the new state comes back third, in PyTorch's layout
    recurrent = True
    state_batch_dim = 1

    def __init__(self, layout, hidden_size=128):
        super().__init__(layout, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size)

    def initial_state(self, batch_size, device="cpu"):
        return (torch.zeros(1, batch_size, self.gru.hidden_size, device=device),)

    def forward_eval(self, observations, state):
        x = self.body(observations[:, :TOKENS].float().flatten(1) / 255.0)
        out, h = self.gru(x[None], state[0])
        return self.actor(out[0]), self.critic(out[0]).squeeze(-1), (h,)


class WrongValues(FlatNet):
    def forward(self, obs, state=None, resets=None):
        logits, values, state = super().forward(obs, state, resets)
        return logits, values[..., None], state  # (L, B, 1) instead of (L, B)


class Flat(NeuralPolicy):
    network_class = FlatNet


class SpecShaped(MultiAgentPolicy):  # the specification's example: `self.network`, a stub step_batch, no DAF base
    def __init__(self, env_interface, seed=42):
        super().__init__(env_interface)
        self.seed = seed
        self.network = StepFlatNet(SimpleNamespace(action_names=env_interface.all_action_names))

    def step_batch(self, observations, actions):
        pass


class NetworkMethod(MultiAgentPolicy):  # mettagrid's own convention: network() returns the module
    def __init__(self, env_interface, device="cpu"):
        super().__init__(env_interface, device=device)
        self._net = TorchLayoutGRU(SimpleNamespace(action_names=env_interface.all_action_names), 64)
        self._net.state_batch_dim = 1

    def network(self):
        return self._net


class NoNetwork(MultiAgentPolicy):  # scripted: nothing to train
    def step_batch(self, observations, actions):
        actions[...] = 0


class GRU(NeuralPolicy):
    network_class = TorchLayoutGRU


class Wrong(NeuralPolicy):
    network_class = WrongValues


class StepFlat(NeuralPolicy):
    network_class = StepFlatNet


class StepGRU(NeuralPolicy):
    network_class = StepGRUNet
"""


def _config(tmp_path, class_path: str, **kw) -> DAFTrainingConfig:
    return DAFTrainingConfig(
        policy_class_path=class_path,
        missions=["training_facility_1"],
        num_envs=4,
        num_steps=32,
        bptt_horizon=8,
        checkpoint_dir=str(tmp_path),
        progress=False,
        **kw,
    )


def test_a_flat_projection_of_the_tokens_trains(tmp_path, make_package):
    # It used to fail in the first update ("mat1 and mat2 shapes cannot be multiplied"): acting passed every
    # token, the update only the unpadded ones. Without `variable_tokens`, the update now passes every token too.
    package = make_package(NETWORKS)
    result = train(_config(tmp_path, f"{package}.Flat", num_training_steps=512, run_id="flat"))
    assert result.global_step >= 512


@pytest.mark.parametrize(
    ("policy", "parameter"),
    [
        ("Flat", "body.0.weight"),  # an MLP over the raw tokens (no variable_tokens)
        ("gridnet.GRUPolicy", "gru.weight_ih_l0"),  # examples/gridnet: PyTorch's state layout, declared
        ("StepFlat", "body.0.weight"),  # forward_eval, one step at a time
        ("StepGRU", "gru.weight_ih_l0"),  # forward_eval, recurrent, PyTorch's layout
        ("SpecShaped", "body.0.weight"),  # a plain MultiAgentPolicy setting self.network (forward_eval)
        ("NetworkMethod", "gru.weight_ih_l0"),  # a plain MultiAgentPolicy with network(), PyTorch's layout
        ("gridnet.PlainGRUPolicy", "gru.weight_ih_l0"),  # examples/gridnet/plain.py
    ],
)
def test_networks_in_their_own_conventions_train_evaluate_and_package(
    tmp_path, make_package, monkeypatch, policy, parameter
):
    from mettagrid.policy.policy import PolicySpec

    from daf.comparison import compare_evaluations
    from daf.evaluation import evaluate
    from daf.packaging import build_package, validate_package

    package = make_package(NETWORKS)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "examples"))
    class_path = policy if "." in policy else f"{package}.{policy}"
    result = train(_config(tmp_path, class_path, num_training_steps=512, run_id=policy.lower()))
    assert result.global_step >= 512
    # Evaluation steps many episodes at once and resets rows: the state's batch must be where DAF expects it.
    spec = PolicySpec(class_path=result.class_path, data_path=result.final_checkpoint)
    evaluation = evaluate(spec, "training_facility_1", episodes=3, seed=1, concurrent_episodes=3, policy_name="mine")
    assert len(evaluation.rewards) == 3
    baseline = evaluate(PolicySpec(class_path="baseline"), "training_facility_1", episodes=3, seed=1)
    compared = compare_evaluations([evaluation, baseline])
    assert {row.policy for row in compared.leaderboard} == {"mine", "baseline"} and len(compared.pairwise) >= 1
    # The weights file holds the network's own parameter names (no wrapper prefix).
    import torch

    names = torch.load(result.final_checkpoint, weights_only=True)["state_dict"].keys()
    assert parameter in names and not any(n.startswith("inner.") for n in names)
    bundle = build_package(spec, tmp_path / "bundle", missions=["training_facility_1"])
    report = validate_package(bundle, missions=["training_facility_1"])
    assert report.ok, report.errors


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("GRU", r"state tensor 0 has shape \(1, 4, 128\) for 4 rows; DAF keeps one row per batch entry on dimension 0, "
                r"expected \(4, \.\.\.\); its batch is on dimension 1 \(PyTorch's \(num_layers, batch, hidden\)"),
        ("Wrong", r"acting: values have shape \(1, 4, 1\), expected \(L, B\) = \(1, 4\)"),
    ],
)  # fmt: skip
def test_a_network_that_breaks_the_contract_fails_before_training(tmp_path, make_package, policy, message):
    package = make_package(NETWORKS)
    config = _config(tmp_path, f"{package}.{policy}", num_training_steps=512, run_id=policy.lower())
    with pytest.raises(TrainingError, match=message):
        validate_training_config(config)
    with pytest.raises(TrainingError, match=message):
        train(config)
    assert not (tmp_path / policy.lower() / "checkpoints").exists()  # nothing was trained


def test_environment_validation_names_the_contract_mismatch(tmp_path, make_package):
    from daf.environment_checks import ERROR, OK, daf_check_environment

    package = make_package(NETWORKS)
    report = daf_check_environment(
        missions=["training_facility_1"],
        policy_class_paths=["lstm", f"{package}.GRU", f"{package}.SpecShaped", f"{package}.NoNetwork", "baseline"],
        output_dir=str(tmp_path / "out"),
    )
    assert report.get("network:lstm:training_facility_1").status == OK
    check = report.get(f"network:{package}.GRU:training_facility_1")
    assert check.status == ERROR and "its batch is on dimension 1" in check.message
    assert report.get(f"network:{package}.SpecShaped:training_facility_1").status == OK  # plain, with a network
    for untrained in ("baseline", f"{package}.NoNetwork"):  # not trainable: not checked
        assert not any(c.name.startswith(f"network:{untrained}") for c in report.checks)


def test_a_plain_policys_trained_weights_are_what_evaluation_and_mettagrids_loader_run(tmp_path, make_package):
    import json

    import torch
    from mettagrid.policy.loader import initialize_or_load_policy
    from mettagrid.policy.policy import PolicySpec

    from daf.missions import get_mission
    from daf.policies.hosted import HostedNetworkPolicy
    from daf.policies.neural import CheckpointError
    from daf.policies.registry import load_policy
    from daf.simulation import env_interface

    package = make_package(NETWORKS)
    result = train(_config(tmp_path, f"{package}.SpecShaped", num_training_steps=512, run_id="spec"))
    assert result.class_path == f"{package}.SpecShaped"
    env = env_interface([get_mission("training_facility_1")])
    trained = torch.load(result.final_checkpoint, weights_only=True)["state_dict"]

    # DAF's loader runs the trained network through the adapter (the class's own step_batch is a stub and its
    # load_policy_data, mettagrid's default, would ignore the file).
    policy = load_policy(PolicySpec(class_path=result.class_path, data_path=result.final_checkpoint), env)
    assert isinstance(policy, HostedNetworkPolicy) and policy.policy_class_path == f"{package}.SpecShaped"
    loaded = policy.network().state_dict()
    assert loaded.keys() == trained.keys() and all(torch.equal(loaded[k], trained[k]) for k in trained)
    # Without DAF weights the class loads as itself.
    assert type(load_policy(PolicySpec(class_path=result.class_path), env)).__name__ == "SpecShaped"

    # The checkpoint's policy_spec.json loads the same through mettagrid's own loader.
    spec_file = Path(result.final_checkpoint).with_name("policy_spec.json")
    spec = json.loads(spec_file.read_text())
    spec["data_path"] = str(spec_file.with_name(spec["data_path"]))
    by_mettagrid = initialize_or_load_policy(env, PolicySpec(**spec))
    assert isinstance(by_mettagrid, HostedNetworkPolicy)
    assert torch.equal(by_mettagrid.network().state_dict()["body.0.weight"], trained["body.0.weight"])

    # Weights of one class do not load into another by accident.
    with pytest.raises(CheckpointError, match=f"holds the weights of {package}.SpecShaped, not of {package}.Network"):
        load_policy(PolicySpec(class_path=f"{package}.NetworkMethod", data_path=result.final_checkpoint), env)


def test_a_plain_policy_without_a_network_is_refused_before_training(tmp_path, make_package):
    package = make_package(NETWORKS)
    config = _config(tmp_path, f"{package}.NoNetwork", num_training_steps=512, run_id="none")
    message = r"is not trainable: it must be a daf.policies.neural.NeuralPolicy, or a mettagrid MultiAgentPolicy whose "
    with pytest.raises(TrainingError, match=message + r"`network` attribute \(or network\(\) method\)"):
        validate_training_config(config)
    assert not (tmp_path / "none").exists()
