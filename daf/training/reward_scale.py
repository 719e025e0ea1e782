"""Reward scaling (DAFTrainingConfig.norm_reward): rewards divided by the running standard deviation of each row's
discounted return, as gym's NormalizeReward wrapper does for CleanRL's continuous-control PPO.

Why it exists: returns of tens (DAF's missions pay +1 per heart, and an agent at a heart source earns most steps)
meet value clipping that lets a value move only clip_coef (0.2) from the rollout's per update, and a value loss
that can crowd the policy's gradient out of the clipped norm. Measured (bench/learning.py, `mlp`, seed 0), it did
not change learning on DAF's missions: 532 on training_facility_2 at 1M agent-steps (547 without), 12.1 on
assembler_1 at 2M (11.6), and neither did clip_vloss false (530; 9.7). So it is off by default; it is there for
missions with larger or rarer rewards.

The statistics are updated once per rollout with all of its steps (gym updates them every step; the difference is
only in when the first rollout's scale settles), and checkpointed with the trainer so a resumed run scales alike.
"""

from __future__ import annotations

import torch


class RewardScaler:
    def __init__(self, rows: int, gamma: float, device: torch.device):
        self.gamma = gamma
        self.returns = torch.zeros(rows, dtype=torch.float64, device=device)  # each row's discounted return so far
        self.mean = torch.zeros((), dtype=torch.float64, device=device)
        self.var = torch.ones((), dtype=torch.float64, device=device)
        self.count = 1e-4  # gym's RunningMeanStd prior: the first batch sets the statistics

    @torch.no_grad()
    def scale(self, rewards: torch.Tensor, resets: torch.Tensor) -> torch.Tensor:
        """`rewards` (steps, rows) divided by the running return std; `resets[t]` marks rows whose step t starts an
        episode (their return restarts there)."""
        seen = torch.empty_like(rewards, dtype=torch.float64)
        for t in range(rewards.shape[0]):
            self.returns = self.returns * self.gamma * (1.0 - resets[t].double()) + rewards[t].double()
            seen[t] = self.returns
        self._update(seen.flatten())
        return rewards / torch.sqrt(self.var + 1e-8).to(rewards.dtype)

    def _update(self, batch: torch.Tensor) -> None:
        """Chan et al.'s parallel update of mean and variance (what gym's RunningMeanStd does)."""
        batch_mean, batch_var, n = batch.mean(), batch.var(unbiased=False), batch.numel()
        delta, total = batch_mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.var, self.count = m2 / total, total

    def state_dict(self) -> dict:
        return {"returns": self.returns, "mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.returns = state["returns"].to(self.returns.device)
        self.mean, self.var = state["mean"].to(self.mean.device), state["var"].to(self.var.device)
        self.count = float(state["count"])
