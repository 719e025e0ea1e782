"""Recurrent state in the layout the network keeps it, presented to DAF with the batch on dimension 0.

DAF gathers, resets and stores recurrent state by row on dimension 0 (`(B, ...)`). PyTorch's recurrent modules
keep it as `(num_layers, B, hidden)`. A network declares where its batch is with `state_batch_dim` (1 for
PyTorch's layout); `NeuralPolicy` then wraps it in `BatchFirstState`, which moves that dimension to 0 on the way
out of `initial_state` and `forward` and back on the way in, so the network's own code stays as PyTorch writes it.
"""

from __future__ import annotations

import torch
from torch import nn

from daf.policies.step_networks import Stepwise, is_stepwise


class BatchFirstState(nn.Module):
    """`inner`, whose state tensors keep the batch on dimension `inner.state_batch_dim`, with DAF's layout."""

    recurrent = True

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.batch_dim = int(inner.state_batch_dim)
        self.variable_tokens = bool(getattr(inner, "variable_tokens", False))

    def _to_daf(self, state: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, ...] | None:
        return None if state is None else tuple(s.movedim(self.batch_dim, 0).contiguous() for s in state)

    def _to_inner(self, state: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, ...] | None:
        return None if state is None else tuple(s.movedim(0, self.batch_dim).contiguous() for s in state)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...] | None:
        return self._to_daf(self.inner.initial_state(batch_size, device))

    def forward(self, obs: torch.Tensor, state: tuple[torch.Tensor, ...] | None, resets: torch.Tensor | None = None):
        logits, values, new_state = self.inner(obs, self._to_inner(state), resets)
        return logits, values, self._to_daf(new_state)

    # The weights file holds the network's own parameter names, as the user's module defines them.
    def state_dict(self, *args, **kwargs):
        return self.inner.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.inner.load_state_dict(state_dict, strict=strict, assign=assign)


def in_daf_layout(net: nn.Module) -> nn.Module:
    """The network as DAF drives it: a one-step `forward_eval` network run over sequences (step_networks), and
    wrapped here when it declares a state batch dimension other than 0."""
    if is_stepwise(net):
        net = Stepwise(net)
    batch_dim = getattr(net, "state_batch_dim", 0)
    return BatchFirstState(net) if getattr(net, "recurrent", False) and batch_dim != 0 else net
