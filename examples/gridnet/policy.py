"""A GRU over a flat projection of the first observation tokens, written as PyTorch writes recurrent networks.

What DAF needs from a trainable network (the contract at the top of daf/policies/neural.py; DAF checks it on
the missions before any compute and names the first mismatch):
- `forward(obs, state, resets)`: `obs` is uint8 `(L, B, tokens, 3)` (L steps of B agents; `tokens` is the
  environment's full token count, since this network does not declare `variable_tokens`); `resets` is `(L, B)`,
  1 where an agent starts a new episode at that step. It returns logits `(L, B, actions)`, values `(L, B)` and the
  new state.
- `initial_state(B, device)`: the state for B agents. Here it keeps PyTorch's GRU layout `(num_layers, B, hidden)`
  and says so with `state_batch_dim = 1`; DAF moves the batch to where it gathers and resets rows.
- The policy class is a `NeuralPolicy` naming its network: saving, loading (weights_only), batched acting and
  evaluation come from DAF.
"""

from __future__ import annotations

import torch
from torch import nn

from daf.policies.neural import NeuralPolicy

TOKENS = 64  # the first 64 observation tokens (mettagrid pads every observation to the same count)


class GRUNet(nn.Module):
    recurrent = True
    state_batch_dim = 1  # PyTorch's (num_layers, B, hidden)

    def __init__(self, layout, hidden_size: int = 128):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(TOKENS * 3, hidden_size), nn.ReLU())
        self.gru = nn.GRU(hidden_size, hidden_size)
        self.actor = nn.Linear(hidden_size, len(layout.action_names))
        self.critic = nn.Linear(hidden_size, 1)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor]:
        return (torch.zeros(1, batch_size, self.gru.hidden_size, device=device),)

    def forward(self, obs: torch.Tensor, state: tuple[torch.Tensor], resets: torch.Tensor | None = None):
        x = self.body(obs[:, :, :TOKENS].float().flatten(2) / 255.0)  # (L, B, hidden)
        h, outputs = state[0], []
        for t in range(x.shape[0]):  # step by step: an episode may start inside the sequence
            if resets is not None:
                h = h * (1.0 - resets[t])[None, :, None]
            out, h = self.gru(x[t : t + 1], h)
            outputs.append(out)
        y = torch.cat(outputs)
        return self.actor(y), self.critic(y).squeeze(-1), (h,)


class GRUPolicy(NeuralPolicy):
    network_class = GRUNet
