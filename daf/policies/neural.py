"""Trainable policies (`lstm`, `mlp`) and the network contract DAF's trainer relies on.

The trainable-policy contract (what a user's own policy class must meet to be trained by DAF):
- it is a `DAFPolicy` (so evaluation can reset rows) and `network()` returns a `torch.nn.Module` with
    `initial_state(batch_size: int, device) -> tuple[Tensor, ...] | None`
    `forward(obs: uint8 Tensor (L, B, tokens, 3), state, resets: float Tensor (L, B))
        -> (logits (L, B, num_actions), values (L, B), new_state)`
  where `resets[t, b] = 1` means row b starts a new episode at time t (its state is zeroed first);
- `save_policy_data(path)` / `load_policy_data(path)` write and read the network's weights (torch.load with
  weights_only=True). `NeuralPolicy` below implements all of this; subclass it and set `network_class`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from torch import nn

from daf.policies.base import DAFPolicy
from daf.policies.tokens import EMPTY_LOCATION, GLOBAL_LOCATION, ObsLayout


class TokenEncoder(nn.Module):
    """Scatter tokens onto a (feature, cell) grid and apply a linear layer, computed sparsely.

    A dense Linear over features x 13 x 13 would cost ~2.7k inputs per agent; EmbeddingBag gives the same
    function at the cost of the visible tokens only. The `tag` feature is categorical (its value names an
    object type), so each (tag value, cell) pair gets its own row instead of a value-weighted one.
    """

    def __init__(self, layout: ObsLayout, out_dim: int):
        super().__init__()
        max_tag_values = max(layout.type_names, default=0) + 1
        self.cells = layout.height * layout.width
        self.width = layout.width
        self.slots = self.cells + 1  # + one slot for global tokens
        self.num_features = layout.num_features
        self.tag_feature = layout.tag_feature
        self.max_tag_values = max_tag_values
        rows = (layout.num_features + max_tag_values) * self.slots
        self.pad = rows
        self.bag = nn.EmbeddingBag(rows + 1, out_dim, mode="sum", padding_idx=rows)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # mettagrid packs tokens first and pads with 0xFF: drop the all-padding tail of the batch.
        used = int((obs[..., 0] != EMPTY_LOCATION).sum(-1).max()) if obs.numel() else 0
        obs = obs[..., : max(used, 1), :]
        loc = obs[..., 0].long()
        feat = obs[..., 1].long()
        val = obs[..., 2].float()
        is_global = loc == GLOBAL_LOCATION
        valid = (loc != EMPTY_LOCATION) & (feat < self.num_features)
        slot = torch.where(is_global, torch.full_like(loc, self.cells), (loc >> 4) * self.width + (loc & 0x0F))
        is_tag = feat == self.tag_feature
        row_feature = torch.where(is_tag, self.num_features + val.long().clamp(max=self.max_tag_values - 1), feat)
        index = torch.where(valid, row_feature * self.slots + slot, torch.full_like(loc, self.pad))
        # Magnitudes are squashed: inventory counts can reach hundreds.
        weight = torch.where(is_tag, torch.ones_like(val), torch.log1p(val))
        flat_index = index.reshape(-1, index.shape[-1])
        return self.bag(flat_index, per_sample_weights=weight.reshape(flat_index.shape)).reshape(*obs.shape[:-2], -1)


class MLPNet(nn.Module):
    """Feed-forward actor-critic: encoder -> MLP -> policy and value heads."""

    recurrent = False

    def __init__(self, layout: ObsLayout, hidden_size: int = 128):
        super().__init__()
        self.encoder = TokenEncoder(layout, hidden_size)
        self.body = nn.Sequential(nn.ReLU(), nn.Linear(hidden_size, hidden_size), nn.ReLU())
        self.actor = nn.Linear(hidden_size, len(layout.action_names))
        self.critic = nn.Linear(hidden_size, 1)
        _init_heads(self.actor, self.critic)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> None:
        return None

    def forward(self, obs: torch.Tensor, state: Any = None, resets: torch.Tensor | None = None):
        h = self.body(self.encoder(obs))
        return self.actor(h), self.critic(h).squeeze(-1), None


class LSTMNet(nn.Module):
    """Recurrent actor-critic: encoder -> LSTM cell over time -> policy and value heads."""

    recurrent = True

    def __init__(self, layout: ObsLayout, hidden_size: int = 128):
        super().__init__()
        self.hidden_size = hidden_size
        self.encoder = TokenEncoder(layout, hidden_size)
        self.cell = nn.LSTMCell(hidden_size, hidden_size)
        self.actor = nn.Linear(hidden_size, len(layout.action_names))
        self.critic = nn.Linear(hidden_size, 1)
        _init_heads(self.actor, self.critic)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch_size, self.hidden_size, device=device)
        return zeros, zeros.clone()

    def forward(self, obs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], resets: torch.Tensor | None = None):
        x = torch.relu(self.encoder(obs))  # (L, B, H): the encoder runs once over the whole sequence
        h, c = state
        outputs = []
        for t in range(x.shape[0]):
            if resets is not None:
                keep = (1.0 - resets[t]).unsqueeze(-1)
                h, c = h * keep, c * keep
            h, c = self.cell(x[t], (h, c))
            outputs.append(h)
        out = torch.stack(outputs)
        return self.actor(out), self.critic(out).squeeze(-1), (h, c)


def _init_heads(actor: nn.Linear, critic: nn.Linear) -> None:
    # CleanRL's choice: a near-uniform initial policy and a unit-scale value head.
    nn.init.orthogonal_(actor.weight, 0.01)
    nn.init.zeros_(actor.bias)
    nn.init.orthogonal_(critic.weight, 1.0)
    nn.init.zeros_(critic.bias)


class NeuralPolicy(DAFPolicy):
    """A DAF policy around a network; samples actions from the row's seeded stream (reproducible)."""

    network_class: type[nn.Module] = MLPNet

    def __init__(
        self,
        policy_env_info: PolicyEnvInterface,
        device: str = "cpu",
        seed: int = 0,
        hidden_size: int = 128,
        greedy: bool = False,
        **kwargs: Any,
    ):
        super().__init__(policy_env_info, device=device, seed=seed)
        self.hidden_size = hidden_size
        self.greedy = greedy
        self.torch_device = torch.device(device)
        self.net = self.network_class(self.layout, hidden_size).to(self.torch_device)
        self._state: Any = None

    def network(self) -> nn.Module:
        return self.net

    def _rows_state(self, rows: np.ndarray):
        n = int(rows.max()) + 1 if len(rows) else 0
        if not getattr(self.net, "recurrent", False):
            return None
        if self._state is None or self._state[0].shape[0] < n:
            fresh = self.net.initial_state(n, self.torch_device)
            if self._state is not None:
                old = self._state[0].shape[0]
                fresh = tuple(torch.cat([s, f[old:]]) for s, f in zip(self._state, fresh))
            self._state = fresh
        idx = torch.as_tensor(rows, device=self.torch_device)
        return idx, tuple(s[idx] for s in self._state)

    def reset_rows(self, rows: np.ndarray, seeds: np.ndarray) -> None:
        super().reset_rows(rows, seeds)
        found = self._rows_state(rows)
        if found is not None:
            idx, _ = found
            for s in self._state:
                s[idx] = 0.0

    @torch.no_grad()
    def act(self, rows: np.ndarray, observations: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(observations, device=self.torch_device)[None]
        found = self._rows_state(rows)
        state = found[1] if found is not None else None
        logits, _, new_state = self.net(obs, state)
        if found is not None:
            for s, new in zip(self._state, new_state):
                s[found[0]] = new
        logits = logits[0]
        if self.greedy:
            return logits.argmax(-1).cpu().numpy()
        # Inverse-CDF sampling with one uniform per row from the row's own stream.
        cdf = torch.softmax(logits.double(), -1).cumsum(-1).cpu().numpy()
        u = self.rng.uniform(rows)[:, None] * cdf[:, -1:]
        return np.minimum((cdf < u).sum(-1), cdf.shape[-1] - 1)

    def save_policy_data(self, policy_data_path: str) -> None:
        save_weights(self.net, policy_data_path, {"hidden_size": self.hidden_size, "class": type(self).__name__})

    def load_policy_data(self, policy_data_path: str) -> None:
        payload = load_weights(policy_data_path)
        meta = payload.get("meta", {})
        hidden = int(meta.get("hidden_size", self.hidden_size))
        if hidden != self.hidden_size:
            self.hidden_size = hidden
            self.net = self.network_class(self.layout, hidden).to(self.torch_device)
            self._state = None
        try:
            self.net.load_state_dict(payload["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"{policy_data_path}: weights do not fit {type(self).__name__}: {exc}") from None


class MLPPolicy(NeuralPolicy):
    network_class = MLPNet


class LSTMPolicy(NeuralPolicy):
    network_class = LSTMNet


class CheckpointError(ValueError):
    """A checkpoint or weights file is missing, truncated, corrupted or unsafe."""


def save_weights(net: nn.Module, path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """torch.save to a temp file and rename: a crash never leaves a half-written weights file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"state_dict": net.state_dict(), "meta": meta}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a weights file without executing code (weights_only=True); clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated, corrupted or unsafe pickles
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely (corrupted, truncated or unsafe): {first}"
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"checkpoint {path} is not a DAF weights file (no state_dict)")
    return payload
