"""The batched policy base every DAF policy builds on.

A DAF policy acts on *rows*: one row per agent slot in a batch that may hold several episodes at once.
`step_batch` (mettagrid's fast path) acts on rows 0..N-1; `agent_policy(i)` (mettagrid's per-agent path)
acts on row i. `reset_rows(rows, seeds)` starts new episodes on some rows: it clears recurrent state and
reseeds the row's random stream, which is what makes evaluation reproducible in any batch layout.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
from mettagrid.policy.policy import AgentPolicy, MultiAgentPolicy
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.simulator import Action, AgentObservation

from daf.policies.rng import RowRNG, row_seeds
from daf.policies.tokens import ObsLayout, agent_observation_array


class DAFPolicy(MultiAgentPolicy):
    """Base for DAF policies: row-indexed state, seeded per-row randomness, both mettagrid stepping paths."""

    def __init__(self, policy_env_info: PolicyEnvInterface, device: str = "cpu", seed: int = 0, **kwargs: Any):
        super().__init__(policy_env_info, device=device)
        self.seed = seed
        self.device = device
        self.layout = ObsLayout.from_env(policy_env_info)
        self.rng = RowRNG(seed)
        self._agent_resets = 0

    @abstractmethod
    def act(self, rows: np.ndarray, observations: np.ndarray) -> np.ndarray:
        """Actions (int array) for `rows`, given their (len(rows), tokens, 3) observations."""

    def reset_rows(self, rows: np.ndarray, seeds: np.ndarray) -> None:
        """New episodes start on `rows`; `seeds` seed their random streams."""
        self.rng.reseed(rows, seeds)

    def step_batch(self, raw_observations: np.ndarray, raw_actions: np.ndarray) -> None:
        raw_actions[...] = self.act(np.arange(len(raw_observations)), raw_observations)

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        return _RowAgentPolicy(self, agent_id)

    def reset(self) -> None:
        self._agent_resets += 1


class _RowAgentPolicy(AgentPolicy):
    """mettagrid's per-agent interface over one row of the batched policy."""

    def __init__(self, parent: DAFPolicy, row: int):
        super().__init__(parent.policy_env_info)
        self._parent = parent
        self._rows = np.array([row])

    def step(self, obs: AgentObservation) -> Action:
        arr = agent_observation_array(obs, self._parent.layout.num_tokens)[None]
        action = int(self._parent.act(self._rows, arr)[0])
        return Action(name=self._parent.layout.action_names[action])

    def reset(self, simulation: Any = None) -> None:
        # Each reset is a new episode for this row; derive its stream from the policy seed and the reset count.
        self._parent._agent_resets += 1
        seed = row_seeds(self._parent.seed + self._parent._agent_resets, int(self._rows[0]) + 1)[-1:]
        self._parent.reset_rows(self._rows, seed)
