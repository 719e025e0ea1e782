"""User networks outside DAF against the contract (daf/policies/neural.py), checked before any compute."""

from __future__ import annotations

from pathlib import Path

import pytest

from daf.config import DAFTrainingConfig
from daf.training import TrainingError, train, validate_training_config

NETWORKS = """
import torch
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
        ("gridnet.GRUPolicy", "gru.weight_ih_l0"),  # examples/gridnet: PyTorch's state layout, declared
        ("StepFlat", "body.0.weight"),  # forward_eval, one step at a time
        ("StepGRU", "gru.weight_ih_l0"),  # forward_eval, recurrent, PyTorch's layout
    ],
)
def test_networks_in_their_own_conventions_train_evaluate_and_package(
    tmp_path, make_package, monkeypatch, policy, parameter
):
    from mettagrid.policy.policy import PolicySpec

    from daf.evaluation import evaluate
    from daf.packaging import build_package, validate_package

    package = make_package(NETWORKS)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "examples"))
    class_path = policy if "." in policy else f"{package}.{policy}"
    result = train(_config(tmp_path, class_path, num_training_steps=512, run_id=policy.lower()))
    assert result.global_step >= 512
    # Evaluation steps many episodes at once and resets rows: the state's batch must be where DAF expects it.
    spec = PolicySpec(class_path=result.class_path, data_path=result.final_checkpoint)
    evaluation = evaluate(spec, "training_facility_1", episodes=3, seed=1, concurrent_episodes=3)
    assert len(evaluation.rewards) == 3
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
        policy_class_paths=["lstm", f"{package}.GRU", "baseline"],
        output_dir=str(tmp_path / "out"),
    )
    assert report.get("network:lstm:training_facility_1").status == OK
    check = report.get(f"network:{package}.GRU:training_facility_1")
    assert check.status == ERROR and "its batch is on dimension 1" in check.message
    assert not any(c.name.startswith("network:baseline") for c in report.checks)  # not trainable: not checked
