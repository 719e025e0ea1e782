"""The specification's shape: a plain mettagrid `MultiAgentPolicy` that sets `self.network`, trained by DAF.

Nothing here imports DAF. The network is written as PufferLib and CoGames write theirs, one step at a time:
`forward_eval(observations (B, tokens, 3), state) -> (logits (B, actions), values (B,), new_state)`, its state in
PyTorch's GRU layout `(num_layers, B, hidden)`, declared with `state_batch_dim = 1`. DAF trains it through its
network adapter (daf.policies.hosted): DAF's trainer optimises the network, DAF samples actions from its logits
in training, evaluation and a bundle alike, and writes the weights with this module's parameter names.
`step_batch` below is only what this class does when run without DAF's weights (as the specification's own
example, a stub); a DAF-trained checkpoint of this class always runs through the adapter.
"""

from __future__ import annotations

import numpy as np
import torch
from mettagrid.policy.policy import AgentPolicy, MultiAgentPolicy
from torch import nn

TOKENS = 64  # the first 64 observation tokens (mettagrid pads every observation to the same count)


class StepGRU(nn.Module):
    recurrent = True
    state_batch_dim = 1  # PyTorch's (num_layers, B, hidden)

    def __init__(self, num_actions: int, hidden_size: int = 96):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(TOKENS * 3, hidden_size), nn.ReLU())
        self.gru = nn.GRU(hidden_size, hidden_size)
        self.actor = nn.Linear(hidden_size, num_actions)
        self.critic = nn.Linear(hidden_size, 1)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor]:
        return (torch.zeros(1, batch_size, self.gru.hidden_size, device=device),)

    def forward_eval(self, observations: torch.Tensor, state: tuple[torch.Tensor]):
        x = self.body(observations[:, :TOKENS].float().flatten(1) / 255.0)
        out, h = self.gru(x[None], state[0])
        return self.actor(out[0]), self.critic(out[0]).squeeze(-1), (h,)


class PlainGRUPolicy(MultiAgentPolicy):
    """As the specification writes a custom policy: `MultiAgentPolicy`, `self.network`, `step_batch`."""

    def __init__(self, env_interface, seed: int = 42):
        super().__init__(env_interface)
        self.seed = seed
        self.network = StepGRU(len(env_interface.all_action_names))

    def step_batch(self, observations: np.ndarray, actions: np.ndarray) -> None:
        # Greedy actions of a fresh state each step: what this class does on its own, without DAF's adapter.
        with torch.no_grad():
            obs = torch.as_tensor(observations)
            logits, _, _ = self.network.forward_eval(obs, self.network.initial_state(len(obs)))
        actions[...] = logits.argmax(-1).numpy()

    def agent_policy(self, agent_id: int) -> AgentPolicy:
        raise NotImplementedError("PlainGRUPolicy acts on whole batches (step_batch)")
