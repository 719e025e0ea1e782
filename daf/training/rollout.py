"""Collecting experience: a rollout of `num_steps` steps over every environment row, then its advantages (GAE).

Rollouts are cut into chunks of `bptt_horizon` steps; the recurrent state at the start of each chunk is recorded
so that the update can replay each chunk as a sequence from it (truncated BPTT). Feed-forward networks take the
same path and ignore the state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch import nn

from daf.interrupts import raise_if_stop_requested
from daf.policies.tokens import trim_padding
from daf.simulation import EpisodeOutcome
from daf.vecenv import BlockStepping


class CollectionStopped(Exception):
    """A rollout collected in the background (daf.training.collector) was told to stop before its end."""


@dataclass
class Rollout:
    """What one rollout leaves for the update: (steps, rows, ...) tensors on the training device."""

    obs: torch.Tensor  # uint8 tokens
    actions: torch.Tensor
    logprobs: torch.Tensor
    resets: torch.Tensor  # 1 where the row's episode starts at that step
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    chunk_states: list[torch.Tensor]  # recurrent state at the start of each `horizon` chunk: (chunks, rows, ...)
    horizon: int  # steps per sequence the update replays
    stale: bool  # acted by weights older than the network the update starts from (daf.training.collector)


class RolloutBuffer:
    """Storage every rollout of a run reuses, and what carries over from one rollout to the next: whether each
    row's episode just ended, and the network's recurrent state. `finished` holds the episodes that ended during
    the latest rollout, as (mission, outcome)."""

    def __init__(self, envs: BlockStepping, net: nn.Module, num_steps: int, bptt_horizon: int, device: torch.device):
        n = envs.num_rows
        self.steps, self.horizon, self.device = num_steps, min(bptt_horizon, num_steps), device
        self.batch_size = num_steps * n  # agent-steps per rollout
        self.obs = torch.zeros((num_steps, n, *envs.observations.shape[1:]), dtype=torch.uint8, device=device)
        self.actions = torch.zeros((num_steps, n), dtype=torch.long, device=device)
        self.logprobs = torch.zeros((num_steps, n), device=device)
        self.rewards = torch.zeros((num_steps, n), device=device)
        self.resets = torch.zeros((num_steps, n), device=device)
        self.values = torch.zeros((num_steps, n), device=device)
        self.recurrent = getattr(net, "recurrent", False)
        chunks = num_steps // self.horizon
        self.chunk_states = (
            [torch.zeros((chunks, n, *s.shape[1:]), device=device) for s in net.initial_state(1, device)]
            if self.recurrent
            else []
        )
        # Once per rollout, for networks that take a variable token count (DAF's own): every minibatch then
        # gathers ~10x fewer bytes. Other networks get the full count, as when acting (contract.py).
        self.trim_tokens = getattr(net, "variable_tokens", False)
        # Environment buffers seen as tensors without copies (CPU); each step moves the observations to the device
        # once (into self.obs), rewards stay on the host until the rollout ends, and the only device->host transfer
        # per step is the sampled actions.
        self.host_obs = torch.from_numpy(envs.observations)
        self.host_dones = torch.from_numpy(envs.dones)
        self.host_step_rewards = torch.from_numpy(envs.rewards)
        self.host_rewards = torch.zeros((num_steps, n), dtype=torch.float32)
        if device.type == "cuda":
            self.host_rewards = self.host_rewards.pin_memory()
        self.next_done = torch.ones(n, device=device)
        self.state = net.initial_state(n, device)
        self.finished: list[tuple[str, EpisodeOutcome]] = []
        self.stale = False  # set by daf.training.collector for a rollout acted by a copy of older weights

    def continue_from(self, other: RolloutBuffer) -> None:
        """Start the next rollout where `other`'s ended (another buffer over the same environments)."""
        self.next_done = other.next_done.clone()
        self.state = None if other.state is None else tuple(s.clone() for s in other.state)

    @torch.no_grad()
    def collect(
        self, envs: BlockStepping, net: nn.Module, generator: torch.Generator, stop: threading.Event | None = None
    ) -> torch.Tensor:
        """Act `num_steps` steps in every row, sampling actions from `generator`; returns the value of the
        observation after the last step, which the advantages bootstrap from. `stop`, when set, ends the collection
        within a step (CollectionStopped).

        Rows come in the environment's blocks: each block is inferred and sent off to step while the next one is
        inferred (with env workers and two blocks, stepping overlaps inference; in process, one block steps at
        once). A block's observations, rewards and dones are read only once `wait` says it has stepped."""
        net.eval()
        horizon = self.horizon
        blocks = [_BlockViews(self, rows) for rows in envs.blocks]
        for t in range(self.steps):
            if stop is not None and stop.is_set():
                break
            if stop is None:  # collecting in the caller's thread: a stop signal ends it here (daf/interrupts.py)
                raise_if_stop_requested()
            for block, v in enumerate(blocks):
                envs.wait(block)  # its step t-1 (the previous step's rewards and dones; this step's observations)
                if t > 0:  # at t = 0, next_done carries over from the previous rollout (all ones at the start)
                    v.host_rewards[t - 1] = v.host_step_rewards
                    v.next_done.copy_(v.host_dones, non_blocking=True)
                v.obs[t].copy_(v.host_obs, non_blocking=True)
                v.resets[t] = v.next_done
                state = self.state if v.whole or self.state is None else tuple(s[v.rows] for s in self.state)
                if self.recurrent and t % horizon == 0:
                    keep = 1.0 - v.next_done
                    for store, s in zip(v.chunk_states, state):  # a state tensor is (rows, ...), any rank
                        store[t // horizon] = s * keep.view(-1, *[1] * (s.dim() - 1))
                logits, value, state = net(v.obs[t : t + 1], state, v.resets[t : t + 1])
                if v.whole or self.state is None:
                    self.state = state
                else:
                    for whole, part in zip(self.state, state):
                        whole[v.rows] = part
                # Same sampling as Categorical(logits=...).sample(), without building the distribution.
                log_probs = torch.log_softmax(logits[0], -1)
                action = torch.multinomial(log_probs.exp(), 1, True, generator=generator)
                v.logprobs[t] = log_probs.gather(-1, action).squeeze(-1)
                action = action.squeeze(-1)
                v.actions[t], v.values[t] = action, value[0]
                envs.send(block, action.cpu().numpy())
        for block in range(len(blocks)):
            envs.wait(block)
        if stop is not None and stop.is_set():
            raise CollectionStopped
        self.finished = envs.pop_finished()
        self.host_rewards[self.steps - 1] = self.host_step_rewards
        self.next_done = self.host_dones.to(self.device, copy=True, non_blocking=True)
        next_obs = self.host_obs.to(self.device)
        self.rewards.copy_(self.host_rewards, non_blocking=True)
        _, next_value, _ = net(next_obs[None], self.state, self.next_done[None])
        return next_value[0]

    def for_update(self, advantages: torch.Tensor, returns: torch.Tensor) -> Rollout:
        return Rollout(
            obs=trim_padding(self.obs) if self.trim_tokens else self.obs,
            actions=self.actions,
            logprobs=self.logprobs,
            resets=self.resets,
            values=self.values,
            advantages=advantages,
            returns=returns,
            chunk_states=self.chunk_states,
            horizon=self.horizon,
            stale=self.stale,
        )


class _BlockViews:
    """One block's rows of the buffer's tensors, as views made once per rollout: the step loop then indexes only
    by time, as it would over every row (with one block, each view is the whole tensor)."""

    def __init__(self, buffer: RolloutBuffer, rows: slice):
        self.rows, self.whole = rows, rows == slice(0, len(buffer.next_done))
        self.obs, self.resets, self.logprobs = buffer.obs[:, rows], buffer.resets[:, rows], buffer.logprobs[:, rows]
        self.actions, self.values = buffer.actions[:, rows], buffer.values[:, rows]
        self.host_rewards, self.host_step_rewards = buffer.host_rewards[:, rows], buffer.host_step_rewards[rows]
        self.host_obs, self.host_dones, self.next_done = (
            buffer.host_obs[rows],
            buffer.host_dones[rows],
            buffer.next_done[rows],
        )
        self.chunk_states = [store[:, rows] for store in buffer.chunk_states]


@torch.no_grad()
def compute_gae(
    buffer: RolloutBuffer, next_value: torch.Tensor, gamma: float, gae_lambda: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimates and returns (advantages + values) of the rollout in `buffer`. A row's
    value is not bootstrapped across a reset: the next step then belongs to a new episode."""
    rewards, values, resets = buffer.rewards, buffer.values, buffer.resets
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros(rewards.shape[1], device=rewards.device)
    for t in reversed(range(buffer.steps)):
        if t == buffer.steps - 1:
            non_terminal, next_values = 1.0 - buffer.next_done, next_value
        else:
            non_terminal, next_values = 1.0 - resets[t + 1], values[t + 1]
        delta = rewards[t] + gamma * next_values * non_terminal - values[t]
        last_gae = delta + gamma * gae_lambda * non_terminal * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values
