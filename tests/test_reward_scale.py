"""Reward scaling (`norm_reward`, daf.training.reward_scale): the running statistics of every row's discounted
return, returns restarting at episode starts, the rewards divided by their std, and the statistics carried through
a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from daf.config import ConfigError, DAFTrainingConfig
from daf.training import train
from daf.training.checkpoints import latest_checkpoint, load_trainer_state
from daf.training.reward_scale import RewardScaler


def _discounted_returns(rewards: np.ndarray, resets: np.ndarray, gamma: float) -> np.ndarray:
    out, running = np.zeros_like(rewards), np.zeros(rewards.shape[1])
    for t in range(len(rewards)):
        running = running * gamma * (1 - resets[t]) + rewards[t]
        out[t] = running
    return out


def test_the_scale_is_the_std_of_every_return_seen_so_far():
    rng = np.random.default_rng(0)
    gamma, rows = 0.99, 6
    scaler = RewardScaler(rows, gamma, torch.device("cpu"))
    rewards = rng.poisson(0.7, size=(3 * 40, rows)).astype(np.float32)
    resets = (rng.random((3 * 40, rows)) < 0.02).astype(np.float32)
    returns = _discounted_returns(rewards.astype(np.float64), resets, gamma)
    for k in range(3):  # three rollouts of 40 steps: the return carries over between them
        part = slice(40 * k, 40 * (k + 1))
        scaled = scaler.scale(torch.from_numpy(rewards[part]), torch.from_numpy(resets[part]))
        seen = returns[: 40 * (k + 1)].ravel()
        std = np.sqrt(seen.var() + 1e-8)
        np.testing.assert_allclose(scaled.numpy(), rewards[part] / std, rtol=1e-4)
        assert float(scaler.mean) == pytest.approx(seen.mean(), rel=1e-4)
    np.testing.assert_allclose(scaler.returns.numpy(), returns[-1])


def test_a_resumed_run_keeps_its_reward_statistics(tmp_path, monkeypatch):
    settings = dict(
        policy_class_path="mlp", missions=["training_facility_1"], num_envs=2, num_steps=32,
        checkpoint_dir=str(tmp_path), run_id="r", progress=False, norm_reward=True, checkpoint_interval=1024,
    )  # fmt: skip
    train(DAFTrainingConfig(num_training_steps=2048, **settings))
    saved = load_trainer_state(latest_checkpoint(tmp_path / "r"))["reward_scale"]
    assert saved["count"] == pytest.approx(2048, abs=1e-3) and float(saved["var"]) > 0  # every agent-step seen

    seen = {}
    original = RewardScaler.load_state_dict

    def spy(self, state):
        seen.update(state)
        original(self, state)

    monkeypatch.setattr(RewardScaler, "load_state_dict", spy)
    result = train(DAFTrainingConfig(num_training_steps=3072, **settings))
    assert result.resumed_from_step == 2048
    assert seen["count"] == saved["count"] and torch.equal(seen["returns"], saved["returns"])


def test_norm_reward_is_validated_like_every_field():
    with pytest.raises(ConfigError, match="norm_reward"):
        DAFTrainingConfig.from_dict({"norm_reward": "perhaps"})
