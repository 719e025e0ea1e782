"""Trainable policies (`lstm`, `mlp`) and the network contract DAF's trainer relies on.

The trainable-policy contract (what a user's own policy class must meet to be trained by DAF):
- it is a `NeuralPolicy` subclass naming its `network_class`, or a plain mettagrid `MultiAgentPolicy` whose
  `network` attribute (or `network()`) is the module, which DAF runs through daf.policies.hosted; the module has
    `initial_state(batch_size: int, device) -> tuple[Tensor, ...] | None`
    `forward(obs: uint8 Tensor (L, B, tokens, 3), state, resets: float Tensor (L, B))
        -> (logits (L, B, num_actions), values (L, B), new_state)`
  where `resets[t, b] = 1` means row b starts a new episode at time t (its state is zeroed first);
- `tokens` is the environment's full token count (`policy_env_info.observation_shape[0]`) in every call, unless the
  network sets `variable_tokens = True`: then the PPO update passes the rollout with its trailing padding tokens
  trimmed (fewer tokens; DAF's own networks pool over tokens and do);
- a recurrent network (`recurrent = True`) keeps its state as a tuple of tensors, from `initial_state` and
  `forward` alike, with the batch on dimension 0, `(B, ...)` (DAF gathers, resets and stores rows there), or on the
  dimension it declares as `state_batch_dim` (1 for PyTorch's `(num_layers, B, hidden)`; daf.policies.network_adapters
  moves it for DAF);
- a network written one step at a time (PufferLib / CoGames: no `forward`, but
    `forward_eval(observations (B, tokens, 3), state) -> (logits (B, num_actions), values (B,)[, new_state])`)
  is run over sequences by daf.policies.network_adapters;
- `save_policy_data(path)` / `load_policy_data(path)` write and read the network's weights (torch.load with
  weights_only=True). `NeuralPolicy` below implements all of this; subclass it and set `network_class`.
`daf.policies.contract.check_network_contract` checks all of it on the missions before training starts and names
the first mismatch with the shape it expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from torch import nn

from daf.errors import InputError
from daf.files import atomic_path
from daf.policies.base import DAFPolicy
from daf.policies.network_adapters import adapt_network
from daf.policies.tokens import (
    EMPTY_LOCATION,
    FEATURE_VOCABULARY,
    GLOBAL_LOCATION,
    TYPE_VOCABULARY,
    UNKNOWN_BUCKETS,
    VOCABULARY_VERSION,
    ObsLayout,
    trim_padding,
    vocabulary_index,
)
from daf.torch_files import UnsafeTorchFile, first_non_finite, read_torch_file


class TokenEncoder(nn.Module):
    """Scatter tokens onto a (feature, cell) grid and apply a linear layer, computed sparsely.

    A dense Linear over features x 13 x 13 would cost ~2.7k inputs per agent; EmbeddingBag gives the same
    function at the cost of the visible tokens only. The `tag` feature is categorical (its value names an
    object type), so each (tag value, cell) pair gets its own row instead of a value-weighted one.
    """

    def __init__(self, layout: ObsLayout, out_dim: int):
        super().__init__()
        self.cells = layout.height * layout.width
        self.width = layout.width
        self.slots = self.cells + 1  # + one slot for global tokens
        num_features = len(FEATURE_VOCABULARY) + UNKNOWN_BUCKETS
        num_types = len(TYPE_VOCABULARY) + UNKNOWN_BUCKETS
        rows = (num_features + num_types) * self.slots
        self.pad = rows
        self.bag = nn.EmbeddingBag(rows + 1, out_dim, mode="sum", padding_idx=rows)
        # Lookup tables (not saved in checkpoints) that turn a token's bytes into its bag row and weight with
        # three gathers. Key (feature, value) -> feature row offset and weight; location -> cell slot. Rows are
        # chosen by feature and object-type *names* (see daf.policies.tokens.FEATURE_VOCABULARY), so a network
        # trained on one mission reads any other. Tokens that carry nothing (padding location, unknown feature
        # id, weight 0) map to offset or slot `pad`, so their row sum is clamped onto the padding row, which the
        # bag skips (also in the backward pass).
        feature_row = torch.full((256,), -1)
        for fid, name in layout.feature_names.items():
            feature_row[fid] = vocabulary_index(name, FEATURE_VOCABULARY)
        type_row = torch.full((256,), num_features + vocabulary_index("", TYPE_VOCABULARY))
        for tid, name in layout.type_names.items():
            type_row[tid] = num_features + vocabulary_index(name, TYPE_VOCABULARY)
        feature = torch.arange(256).repeat_interleave(256)
        value = torch.arange(256).repeat(256)
        is_tag = feature == layout.tag_feature
        row_feature = torch.where(is_tag, type_row[value], feature_row[feature])
        # Magnitudes are squashed: inventory counts can reach hundreds. Tags are categorical (weight 1).
        weight = torch.where(is_tag, torch.ones(()), torch.log1p(value.float()))
        weight = torch.where(feature_row[feature] >= 0, weight, torch.zeros(()))
        feature_offset = torch.where(weight != 0, row_feature * self.slots, torch.tensor(self.pad))
        location = torch.arange(256)
        slot = torch.where(
            location == GLOBAL_LOCATION, torch.tensor(self.cells), (location >> 4) * self.width + (location & 0x0F)
        )
        slot = torch.where(location == EMPTY_LOCATION, torch.tensor(self.pad), slot.clamp(max=self.slots - 1))
        self.register_buffer("_feature_offset", feature_offset, persistent=False)
        self.register_buffer("_feature_weight", weight, persistent=False)
        self.register_buffer("_location_slot", slot, persistent=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-2]
        if obs.device.type == "cpu":
            # On a GPU trimming would cost a device sync per call; padding tokens go to the padding row anyway.
            obs = trim_padding(obs)
        tokens = obs.shape[-2]
        obs = obs.reshape(-1, 3).long()
        key = obs[:, 1] * 256 + obs[:, 2]
        # index_select rather than advanced indexing: the same gather at a third of the per-call cost.
        index = (self._feature_offset.index_select(0, key) + self._location_slot.index_select(0, obs[:, 0])).clamp_(
            max=self.pad
        )
        weight = self._feature_weight.index_select(0, key)
        return self.bag(index.view(-1, tokens), per_sample_weights=weight.view(-1, tokens)).reshape(*lead, -1)


class MLPNet(nn.Module):
    """Feed-forward actor-critic: encoder -> MLP -> policy and value heads."""

    recurrent = False
    variable_tokens = True  # the token encoder pools over tokens: the update may pass fewer (padding trimmed)

    def __init__(self, layout: ObsLayout, hidden_size: int = 128):
        super().__init__()
        self.encoder = TokenEncoder(layout, hidden_size)
        self.body = _hidden_layer(hidden_size)
        self.actor = nn.Linear(hidden_size, len(layout.action_names))
        self.critic = nn.Linear(hidden_size, 1)
        _init_heads(self.actor, self.critic)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> None:
        return None

    def forward(self, obs: torch.Tensor, state: Any = None, resets: torch.Tensor | None = None):
        h = self.body(self.encoder(obs))
        return self.actor(h), self.critic(h).squeeze(-1), None


class LSTMNet(nn.Module):
    """Recurrent actor-critic: encoder -> hidden layer -> LSTM cell over time -> policy and value heads, which read
    the LSTM's output plus the hidden layer's (a skip connection).

    The hidden layer and the skip are measured (bench/learning.py, seed 0, 1M agent-steps, issue #20): without
    either, 328.4 on training_facility_1 and 387.2 on training_facility_2; with the layer alone 412.8 and 360.2;
    with both 396.5 and 537.2 (`baseline` 356.6 and 530.8). The skip lets the heads read the current observation
    directly while the LSTM adds what it remembers.
    """

    recurrent = True
    variable_tokens = True  # as MLPNet

    def __init__(self, layout: ObsLayout, hidden_size: int = 128):
        super().__init__()
        self.hidden_size = hidden_size
        self.encoder = TokenEncoder(layout, hidden_size)
        self.body = _hidden_layer(hidden_size)
        self.cell = nn.LSTMCell(hidden_size, hidden_size)
        self.actor = nn.Linear(hidden_size, len(layout.action_names))
        self.critic = nn.Linear(hidden_size, 1)
        _init_heads(self.actor, self.critic)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch_size, self.hidden_size, device=device)
        return zeros, zeros.clone()

    def forward(self, obs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], resets: torch.Tensor | None = None):
        x = self.body(self.encoder(obs))  # (L, B, H): the encoder runs once over the whole sequence
        h, c = state
        if x.shape[0] == 1:  # one step (acting): no pieces to cut
            if resets is not None:
                keep = (1.0 - resets[0]).unsqueeze(-1)
                h, c = h * keep, c * keep
            out, h_n, c_n = self._lstm(x, h, c)
            h, c = h_n[0], c_n[0]
        else:
            out, (h, c) = self._sequence(x, h, c, resets)
        out = out + x
        return self.actor(out), self.critic(out).squeeze(-1), (h, c)

    def _lstm(self, inputs: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
        """nn.LSTM's kernel (mkldnn on CPU, cuDNN on GPU) with the cell's parameters: (out, h_n, c_n).

        Also for a single step: on CPU it is 1.5x faster than LSTMCell (one fused GEMM for both inputs).
        """
        weights = [self.cell.weight_ih, self.cell.weight_hh, self.cell.bias_ih, self.cell.bias_hh]
        return torch._VF.lstm(inputs, (h0[None], c0[None]), weights, True, 1, 0.0, self.training, False, False)

    def _sequence(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, resets: torch.Tensor | None):
        """The cell applied over time with state zeroed at resets, as one fused LSTM call (same result).

        Each row's sequence is cut at its resets into pieces: a row's first piece starts from the given state,
        later ones from zeros. The pieces, left-aligned in a padded (longest, pieces, H) batch, go through the
        LSTM kernel at once (the weights of `self.cell`; no Python loop over time); outputs at valid positions
        are exact because the LSTM is causal, and are put back in place.
        """
        steps, batch, hidden = x.shape
        device = x.device
        if resets is not None:
            keep = (1.0 - resets[0]).unsqueeze(-1)
            h, c = h * keep, c * keep
            starts = resets.T > 0.5  # (B, L): row-major positions q = b * L + t
            starts[:, 0] = True
        else:
            starts = torch.zeros(batch, steps, dtype=torch.bool, device=device)
            starts[:, 0] = True
        starts = starts.reshape(-1)
        piece_start = starts.nonzero().squeeze(1)  # (P,) first position of each piece
        if len(piece_start) == batch:  # no reset after t=0: one piece per row
            out, h_n, c_n = self._lstm(x, h, c)
            return out, (h_n[0], c_n[0])
        piece = starts.long().cumsum(0) - 1  # piece of each position
        lengths = torch.diff(piece_start, append=piece_start.new_full((1,), starts.numel()))
        offset = torch.arange(starts.numel(), device=device) - piece_start[piece]  # time within its piece
        lengths_host = lengths.cpu()
        num_pieces, longest = len(lengths_host), int(lengths_host.max())
        first = (piece_start % steps == 0).unsqueeze(-1)
        row_of_piece = piece_start // steps
        zero = torch.zeros((), device=device)
        h0 = torch.where(first, h.index_select(0, row_of_piece), zero)
        c0 = torch.where(first, c.index_select(0, row_of_piece), zero)
        flat_x = x.transpose(0, 1).reshape(-1, hidden)
        padded = flat_x.new_zeros((longest, num_pieces, hidden)).index_put((offset, piece), flat_x)
        out_padded, h_n, c_n = self._lstm(padded, h0, c0)
        out = out_padded[offset, piece].view(batch, steps, -1).transpose(0, 1)
        # Final state per row: that of its last piece. The kernel's final state is taken after `longest` steps,
        # right only for pieces that long; shorter last pieces (from zero state) are rerun, grouped by length.
        last_piece = piece.view(batch, steps)[:, -1]
        h_last, c_last = h_n[0].index_select(0, last_piece), c_n[0].index_select(0, last_piece)
        last_length = lengths_host[last_piece.cpu()]
        for length in torch.unique(last_length[last_length < longest]).tolist():
            rows = torch.nonzero(last_length == length).squeeze(1).to(device)
            _, h_r, c_r = self._lstm(
                x[steps - length :].index_select(1, rows),
                h.new_zeros(len(rows), hidden),
                h.new_zeros(len(rows), hidden),
            )
            h_last, c_last = h_last.index_copy(0, rows, h_r[0]), c_last.index_copy(0, rows, c_r[0])
        return out, (h_last, c_last)


def _hidden_layer(hidden_size: int) -> nn.Module:
    """ReLU -> Linear -> ReLU over the encoder's (linear) sum: the networks' one nonlinear layer before the heads."""
    return nn.Sequential(nn.ReLU(), nn.Linear(hidden_size, hidden_size), nn.ReLU())


def _init_heads(actor: nn.Linear, critic: nn.Linear) -> None:
    # CleanRL's choice: a near-uniform initial policy and a unit-scale value head.
    nn.init.orthogonal_(actor.weight, 0.01)
    nn.init.zeros_(actor.bias)
    nn.init.orthogonal_(critic.weight, 1.0)
    nn.init.zeros_(critic.bias)


class NeuralPolicy(DAFPolicy):
    """A DAF policy around a network; samples actions from the row's seeded stream (reproducible)."""

    network_class: type[nn.Module] = MLPNet
    # Raised when the network's layers change: a weights file records it and is refused by another version
    # (with the reason, not a list of missing keys). A file without it was written by version 1.
    network_version: int = 1

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
        self.net = self._build_network(hidden_size)
        self._state: Any = None

    def _build_network(self, hidden_size: int) -> nn.Module:
        # Initial weights come from the policy's seed, so an untrained policy is reproducible too. Only the CPU
        # generator is seeded (torch.manual_seed would also reseed CUDA's, which fork_rng(devices=[]) does not restore),
        # and fork_rng puts it back: building a policy leaves the process's random state as it was.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.seed)
            return adapt_network(self.network_class(self.layout, hidden_size).to(self.torch_device))

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
        if len(rows) == self._state[0].shape[0] and rows[0] == 0 and rows[-1] == len(rows) - 1:
            # Every row in order (the batched path's np.arange): the state itself, no gather/scatter.
            if np.array_equal(rows, np.arange(len(rows))):
                return None, self._state
        idx = torch.as_tensor(rows, device=self.torch_device)
        return idx, tuple(s[idx] for s in self._state)

    def reset_rows(self, rows: np.ndarray, seeds: np.ndarray) -> None:
        super().reset_rows(rows, seeds)
        found = self._rows_state(rows)
        if found is not None:
            idx, _ = found
            for s in self._state:
                if idx is None:
                    s.zero_()
                else:
                    s[idx] = 0.0

    @torch.no_grad()
    def act(self, rows: np.ndarray, observations: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(observations, device=self.torch_device)[None]
        found = self._rows_state(rows)
        state = found[1] if found is not None else None
        logits, _, new_state = self.net(obs, state)
        if found is not None:
            if found[0] is None:
                self._state = tuple(new_state)
            else:
                for s, new in zip(self._state, new_state):
                    s[found[0]] = new
        logits = logits[0]
        if self.greedy:
            return logits.argmax(-1).cpu().numpy()
        # Inverse-CDF sampling with one uniform per row from the row's own stream.
        cdf = torch.softmax(logits.double(), -1).cumsum(-1).cpu().numpy()
        u = self.rng.uniform(rows)[:, None] * cdf[:, -1:]
        return np.minimum((cdf < u).sum(-1), cdf.shape[-1] - 1)

    def untrained_copy(self, seed: int) -> NeuralPolicy:
        """A policy built as this one was, with the initial weights of `seed`."""
        return type(self)(self.policy_env_info, device=self.device, seed=seed, hidden_size=self.hidden_size)

    def weights_meta(self) -> dict[str, Any]:
        """What a weights file records besides the weights (checked when it is loaded)."""
        return {
            "hidden_size": self.hidden_size,
            "class": type(self).__name__,
            "vocabulary": VOCABULARY_VERSION,
            "network": self.network_version,
        }

    def check_weights_meta(self, meta: dict[str, Any], policy_data_path: str) -> None:
        """Refuse a weights file whose `weights_meta` says it cannot be this policy's."""
        if meta.get("vocabulary") != VOCABULARY_VERSION:
            raise CheckpointError(
                f"{policy_data_path}: written with observation vocabulary {meta.get('vocabulary')}, "
                f"this DAF reads vocabulary {VOCABULARY_VERSION}"
            )
        written = meta.get("network", 1)
        if meta.get("class") == type(self).__name__ and written != self.network_version:
            raise CheckpointError(
                f"{policy_data_path}: written by version {written} of {type(self).__name__}'s "
                f"network, this DAF builds version {self.network_version} (its layers changed): retrain the policy"
            )

    def checkpoint_spec(self, class_path: str) -> tuple[str, dict[str, Any]]:
        """(class_path, init_kwargs) with which mettagrid's loader rebuilds this policy around its weights file."""
        return class_path, {"hidden_size": self.hidden_size}

    def save_policy_data(self, policy_data_path: str) -> None:
        save_weights(self.net, policy_data_path, self.weights_meta())

    def load_policy_data(self, policy_data_path: str) -> None:
        payload = load_weights(policy_data_path)
        meta = payload.get("meta", {})
        self.check_weights_meta(meta, policy_data_path)
        hidden = int(meta.get("hidden_size", self.hidden_size))
        if hidden != self.hidden_size:
            self.hidden_size = hidden
            self.net = self._build_network(hidden)
            self._state = None
        # NaN or infinite weights would load and act (NaN logits pick action 0 every step), scoring 0 with no error.
        bad = first_non_finite(payload["state_dict"])
        if bad:
            raise CheckpointError(
                f"{policy_data_path}: weights tensor {bad!r} holds NaN or infinite values (training diverged, or the "
                "file was damaged): use an earlier checkpoint"
            )
        try:
            self.net.load_state_dict(payload["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"{policy_data_path}: weights do not fit {type(self).__name__}: {exc}") from None


class MLPPolicy(NeuralPolicy):
    network_class = MLPNet


class LSTMPolicy(NeuralPolicy):
    network_class = LSTMNet
    network_version = 2  # 2: the hidden layer and the skip connection


class CheckpointError(InputError, ValueError):
    """A checkpoint or weights file is missing, truncated, corrupted or unsafe."""


def save_weights(net: nn.Module, path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """torch.save to a temp file and rename: a crash never leaves a half-written weights file."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": net.state_dict(), "meta": meta}, tmp)


def load_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a weights file without executing code (weights_only=True); clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # mmap: every caller copies the tensors into a network or drops them, so they need not be read into memory.
        payload = read_torch_file(path, mmap=True)
    except UnsafeTorchFile as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely (corrupted, truncated or unsafe): {exc}"
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"checkpoint {path} is not a DAF weights file (no state_dict)")
    return payload
