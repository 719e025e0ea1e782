"""The PPO update (CleanRL's): clipped policy objective, optionally clipped value loss, entropy bonus, advantage
normalisation, gradient clipping and an early stop on approximate KL, over minibatches of rollout sequences.

A stale rollout (acted by weights one update older than the network, DAFTrainingConfig.overlap_update) is
corrected as decoupled PPO does (Hilton et al. 2021, "Batch size-invariance for policy optimization"): the clipped
ratio is taken against the network's own probabilities at the start of the update (the proximal policy), not the
acting weights', and each sample is weighted by proximal / behaviour probability. Clipping against the acting
weights instead would zero the gradient of every sample the last update already moved past the clip range: in
bench/learning.py that took `mlp` from 385 to 311 on training_facility_1 at 1M agent-steps (4 epochs, seed 0); the
correction brought it back to 359."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from daf.config import DAFTrainingConfig
from daf.training.rollout import Rollout


def make_optimizer(net: nn.Module, learning_rate: float, device: torch.device) -> torch.optim.Adam:
    return torch.optim.Adam(net.parameters(), lr=learning_rate, eps=1e-5, **_adam_impl(device))


def _adam_impl(device: torch.device) -> dict[str, bool]:
    """The fused Adam kernel (one pass over all parameters) where this torch build has it, else foreach."""
    try:
        probe = torch.zeros(1, device=device, requires_grad=True)
        torch.optim.Adam([probe], fused=True)
        return {"fused": True}
    except (RuntimeError, ValueError):
        return {"foreach": True}


def ppo_update(
    config: DAFTrainingConfig,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    generator: torch.Generator,
    ent_coef: float | None = None,
) -> dict[str, float]:
    """`update_epochs` passes over the rollout's sequences in minibatches (shuffled by `generator`), one optimizer
    step on the PPO loss each; returns the update's statistics for the metrics log. `ent_coef` is this update's
    entropy coefficient (config.ent_coef unless the trainer anneals it)."""
    ent_coef = config.ent_coef if ent_coef is None else ent_coef
    net.train()
    sequences = _Sequences(rollout)
    device = rollout.obs.device
    minibatch = max(1, sequences.count // config.num_minibatches)
    if rollout.stale:
        sequences.flat["proximal"] = _proximal_logprobs(net, sequences, minibatch)
    # Statistics stay on the device until the end (no host sync per minibatch).
    clipfrac_sum, clipfrac_count = torch.zeros((), device=device), 0
    approx_kl = torch.zeros((), device=device)
    pg_loss = v_loss = entropy_loss = torch.zeros((), device=device)
    for _epoch in range(config.update_epochs):
        order = torch.randperm(sequences.count, device=device, generator=generator)
        for start in range(0, sequences.count, minibatch):
            mb = sequences.gather(order[start : start + minibatch])
            logits, new_values, _ = net(mb.obs, mb.state, mb.resets)
            log_probs = torch.log_softmax(logits, -1)
            new_logprob = log_probs.gather(-1, mb.actions.unsqueeze(-1)).squeeze(-1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            anchor = mb.logprobs if mb.proximal is None else mb.proximal
            log_ratio = new_logprob - anchor
            ratio = log_ratio.exp()
            with torch.no_grad():
                approx_kl = ((ratio - 1) - log_ratio).mean()
                clipfrac_sum += ((ratio - 1.0).abs() > config.clip_coef).float().mean()
                clipfrac_count += 1

            behaviour = None if mb.proximal is None else (mb.proximal - mb.logprobs).exp()
            pg_loss = _policy_loss(config, mb.advantages, ratio, behaviour)
            v_loss = _value_loss(config, new_values, mb.values, mb.returns)
            entropy_loss = entropy.mean()
            loss = pg_loss - ent_coef * entropy_loss + config.vf_coef * v_loss

            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
            optimizer.step()
        if config.target_kl is not None and approx_kl > config.target_kl:
            break

    y_pred, y_true = rollout.values.flatten(), rollout.returns.flatten()
    var_y = torch.var(y_true)
    explained = float("nan") if var_y == 0 else float(1 - torch.var(y_true - y_pred) / var_y)
    return {
        "policy_loss": pg_loss.item(),
        "value_loss": v_loss.item(),
        "entropy": entropy_loss.item(),
        "approx_kl": float(approx_kl),
        "clipfrac": float(clipfrac_sum) / clipfrac_count if clipfrac_count else 0.0,
        "explained_variance": explained,
        "ent_coef": ent_coef,
    }


def _policy_loss(
    config: DAFTrainingConfig, advantages: torch.Tensor, ratio: torch.Tensor, behaviour: torch.Tensor | None
) -> torch.Tensor:
    """The clipped objective; `behaviour` (proximal / acting probability) weights each sample of a stale rollout."""
    if config.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    clipped = torch.clamp(ratio, 1 - config.clip_coef, 1 + config.clip_coef)
    loss = torch.max(-advantages * ratio, -advantages * clipped)
    return (loss if behaviour is None else behaviour * loss).mean()


@torch.no_grad()
def _proximal_logprobs(net: nn.Module, sequences: _Sequences, minibatch: int) -> torch.Tensor:
    """The log-probability of each rollout action under `net` as it is now, flat as the rollout's own (one pass
    over the sequences in minibatch-sized pieces, each from its stored recurrent state as the update replays it)."""
    out = torch.empty_like(sequences.flat["logprobs"])
    for start in range(0, sequences.count, minibatch):
        seq = torch.arange(start, min(start + minibatch, sequences.count), device=out.device)
        mb = sequences.gather(seq)
        logits, _, _ = net(mb.obs, mb.state, mb.resets)
        chosen = torch.log_softmax(logits, -1).gather(-1, mb.actions.unsqueeze(-1)).squeeze(-1)
        out.index_copy_(0, sequences.positions(seq), chosen.reshape(-1))
    return out


def _value_loss(
    config: DAFTrainingConfig, new_values: torch.Tensor, values: torch.Tensor, returns: torch.Tensor
) -> torch.Tensor:
    if config.clip_vloss:
        v_clipped = values + torch.clamp(new_values - values, -config.clip_coef, config.clip_coef)
        return 0.5 * torch.max((new_values - returns) ** 2, (v_clipped - returns) ** 2).mean()
    return 0.5 * ((new_values - returns) ** 2).mean()


@dataclass
class _Minibatch:
    """Sequences of the rollout, (horizon, M, ...) time-major, with the recurrent state each one starts from."""

    obs: torch.Tensor
    state: tuple[torch.Tensor, ...] | None
    resets: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    proximal: torch.Tensor | None  # a stale rollout's log-probabilities under the network at the update's start


class _Sequences:
    """The rollout as `(steps // horizon) * rows` sequences of `horizon` consecutive steps of one row; sequence
    `chunk * rows + row` is row `row`'s chunk `chunk`."""

    def __init__(self, rollout: Rollout):
        self.horizon = rollout.horizon
        steps, self.rows = rollout.actions.shape
        self.count = (steps // self.horizon) * self.rows
        self.offsets = torch.arange(self.horizon, device=rollout.obs.device)
        # Rollout tensors seen as (steps * rows, ...) so a minibatch is gathered with index_select (contiguous row
        # copies) rather than two-dimensional advanced indexing.
        self.obs = rollout.obs.reshape(-1, *rollout.obs.shape[2:])
        self.flat = {
            name: getattr(rollout, name).reshape(-1)
            for name in ("actions", "logprobs", "resets", "values", "advantages", "returns")
        }
        self.states = [s.reshape(-1, *s.shape[2:]) for s in rollout.chunk_states]

    def positions(self, seq: torch.Tensor) -> torch.Tensor:
        """The flat (time, row) positions of sequences `seq`, time-major: (horizon * M,)."""
        chunk, row = seq // self.rows, seq % self.rows
        t_idx = (chunk[:, None] * self.horizon + self.offsets[None, :]).T  # (horizon, M)
        return (t_idx * self.rows + row[None, :]).reshape(-1)

    def gather(self, seq: torch.Tensor) -> _Minibatch:
        idx = self.positions(seq)
        shape = (self.horizon, len(seq))
        step = {name: flat.index_select(0, idx).view(shape) for name, flat in self.flat.items()}
        step.setdefault("proximal", None)
        # The chunk's stored state already had resets applied; only resets inside the chunk matter.
        step["resets"][0] = 0.0
        return _Minibatch(
            obs=self.obs.index_select(0, idx).view(*shape, *self.obs.shape[1:]),
            # chunk_states[k] is (chunks, rows, ...): the sequence's (chunk, row) entry is at chunk * rows + row == seq.
            state=tuple(s.index_select(0, seq) for s in self.states) if self.states else None,
            **step,
        )
