"""Networks written one step at a time, in the PufferLib / CoGames convention, run over DAF's sequences.

Such a network has no DAF-style `forward(obs (L, B, tokens, 3), state, resets)`; it has
`forward_eval(observations (B, tokens, 3), state) -> (logits (B, actions), values (B,))`, and a recurrent one
returns its new state third, as a tuple laid out like its `initial_state` (batch on dimension `state_batch_dim`,
0 unless declared). `Stepwise` gives it DAF's forward: the L steps one after another, each agent's state zeroed
where its episode starts. It is a step loop in Python, so the update of a recurrent network runs L calls where a
DAF-style network runs one sequence.
"""

from __future__ import annotations

import torch
from torch import nn


def is_stepwise(net: nn.Module) -> bool:
    """A network with `forward_eval` and no forward of its own."""
    return hasattr(net, "forward_eval") and type(net).forward is nn.Module.forward


class Stepwise(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.recurrent = bool(getattr(inner, "recurrent", False))
        self.state_batch_dim = int(getattr(inner, "state_batch_dim", 0))
        self.variable_tokens = bool(getattr(inner, "variable_tokens", False))

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...] | None:
        make = getattr(self.inner, "initial_state", None)
        return make(batch_size, device) if make is not None else None

    def _reset(self, state: tuple[torch.Tensor, ...], keep: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(s * keep.view(*[-1 if d == self.state_batch_dim else 1 for d in range(s.dim())]) for s in state)

    def forward(self, obs: torch.Tensor, state: tuple[torch.Tensor, ...] | None, resets: torch.Tensor | None = None):
        logits, values = [], []
        for t in range(obs.shape[0]):
            if state is not None and resets is not None:
                state = self._reset(state, 1.0 - resets[t])
            out = self.inner.forward_eval(obs[t], state)
            if self.recurrent:
                step_logits, step_values, state = out
            else:
                step_logits, step_values = out[0], out[1]
            logits.append(step_logits)
            values.append(step_values)
        return torch.stack(logits), torch.stack(values), state

    # The weights file holds the network's own parameter names, as the user's module defines them.
    def state_dict(self, *args, **kwargs):
        return self.inner.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.inner.load_state_dict(state_dict, strict=strict, assign=assign)
