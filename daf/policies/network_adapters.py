"""Networks written in their own conventions, presented to DAF in the contract's (daf/policies/neural.py).

Two conventions are adapted, so that the network's own code stays as its ecosystem writes it:
- Recurrent state with the batch elsewhere than dimension 0. DAF gathers, resets and stores state by row on
  dimension 0 (`(B, ...)`); PyTorch's recurrent modules keep `(num_layers, B, hidden)`. A network declares where its
  batch is with `state_batch_dim` (1 for PyTorch's layout) and `BatchFirstState` moves that dimension to 0 on the
  way out of `initial_state` and `forward` and back on the way in.
- One step at a time, as PufferLib and CoGames write networks: no DAF-style `forward(obs (L, B, tokens, 3), state,
  resets)` but `forward_eval(observations (B, tokens, 3), state) -> (logits (B, actions), values (B,))`, a recurrent
  one returning its new state third, laid out like its `initial_state`. `Stepwise` runs the L steps one after
  another, each agent's state zeroed where its episode starts. It is a step loop in Python, so the update of a
  recurrent network runs L calls where a DAF-style network runs one sequence.
`NeuralPolicy` applies `adapt_network` to every network it builds; DAF's own networks pass through unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class _Adapter(nn.Module):
    """Wraps `inner`; the weights file keeps the network's own parameter names, as the user's module defines them."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.variable_tokens = bool(getattr(inner, "variable_tokens", False))

    def state_dict(self, *args, **kwargs):
        return self.inner.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.inner.load_state_dict(state_dict, strict=strict, assign=assign)


class Stepwise(_Adapter):
    """A one-step `forward_eval` network run over DAF's (L, B) sequences."""

    def __init__(self, inner: nn.Module):
        super().__init__(inner)
        self.recurrent = bool(getattr(inner, "recurrent", False))
        self.state_batch_dim = int(getattr(inner, "state_batch_dim", 0))

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


class BatchFirstState(_Adapter):
    """A recurrent network whose state tensors keep the batch on dimension `inner.state_batch_dim`, with DAF's
    layout (batch on dimension 0)."""

    recurrent = True

    def __init__(self, inner: nn.Module):
        super().__init__(inner)
        self.batch_dim = int(inner.state_batch_dim)

    def _to_daf(self, state: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, ...] | None:
        return None if state is None else tuple(s.movedim(self.batch_dim, 0).contiguous() for s in state)

    def _to_inner(self, state: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, ...] | None:
        return None if state is None else tuple(s.movedim(0, self.batch_dim).contiguous() for s in state)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...] | None:
        return self._to_daf(self.inner.initial_state(batch_size, device))

    def forward(self, obs: torch.Tensor, state: tuple[torch.Tensor, ...] | None, resets: torch.Tensor | None = None):
        logits, values, new_state = self.inner(obs, self._to_inner(state), resets)
        return logits, values, self._to_daf(new_state)


def adapt_network(net: nn.Module) -> nn.Module:
    """The network as DAF drives it: a `forward_eval` network (one with no forward of its own) run over
    sequences, then its state moved when it declares a batch dimension other than 0."""
    if hasattr(net, "forward_eval") and type(net).forward is nn.Module.forward:
        net = Stepwise(net)
    batch_dim = getattr(net, "state_batch_dim", 0)
    return BatchFirstState(net) if getattr(net, "recurrent", False) and batch_dim != 0 else net
