"""Checking a trainable policy's network against the contract in daf/policies/neural.py before any compute.

The check calls the network the way acting, the PPO update and evaluation will, on real observations of the
missions it will train on, and names the first mismatch with the shape it expected:
- acting and evaluation: one step, every agent a row, the environment's full token count;
- the update: a sequence of steps over a few rows (with fewer tokens when the network sets
  `variable_tokens = True`, because the trainer then trims the observations' padding);
- recurrent state: `initial_state(B)` tensors with the batch on dimension 0 (DAF gathers and resets rows there;
  a network that declares `state_batch_dim` is checked through daf.policies.network_adapters), returned by `forward`
  in the same shapes;
- a save/load round trip gives the same outputs.
A network that breaks any of these would otherwise fail minutes later in the first update or in evaluation.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mettagrid.config.mettagrid_config import MettaGridConfig

from daf.policies.tokens import trim_padding


class NetworkContractError(ValueError):
    """A trainable policy's network does not meet DAF's contract; the message names the mismatch."""


def _first_observations(config: MettaGridConfig) -> np.ndarray:
    from daf.simulation import SimBatch

    batch = SimBatch([config])
    try:
        batch.start(0, seed=0)
        return batch.observations.copy()
    finally:
        batch.close()


def _shape(x: Any) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_outputs(name: str, out: Any, steps: int, rows: int, actions: int) -> Any:
    if not (isinstance(out, tuple) and len(out) == 3):
        raise NetworkContractError(f"{name}: forward must return (logits, values, new_state), got {type(out).__name__}")
    logits, values, new_state = out
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (steps, rows, actions):
        raise NetworkContractError(
            f"{name}: logits have shape {_shape(logits)}, expected (L, B, num_actions) = {(steps, rows, actions)}"
        )
    if not isinstance(values, torch.Tensor) or tuple(values.shape) != (steps, rows):
        raise NetworkContractError(f"{name}: values have shape {_shape(values)}, expected (L, B) = {(steps, rows)}")
    if not torch.isfinite(logits).all() or not torch.isfinite(values).all():
        raise NetworkContractError(f"{name}: logits or values are not finite on real observations")
    return new_state


def _check_state(name: str, state: Any, rows: int, reference: tuple | None = None) -> None:
    if state is None:
        return
    if not isinstance(state, tuple) or not all(isinstance(s, torch.Tensor) for s in state):
        raise NetworkContractError(
            f"{name}: the recurrent state must be a tuple of tensors, got {type(state).__name__}"
        )
    for i, s in enumerate(state):
        if s.dim() < 1 or s.shape[0] != rows:
            batch_dims = [d for d, size in enumerate(s.shape) if size == rows]
            hint = (
                f"; its batch is on dimension {batch_dims[0]} (PyTorch's (num_layers, batch, hidden) layout?): "
                f"declare `state_batch_dim = {batch_dims[0]}` on the network, or move it to dimension 0"
                if batch_dims
                else ""
            )
            raise NetworkContractError(
                f"{name}: state tensor {i} has shape {_shape(s)} for {rows} rows; DAF keeps one row per batch entry "
                f"on dimension 0, expected ({rows}, ...){hint}"
            )
        if reference is not None and s.shape != reference[i].shape:
            raise NetworkContractError(
                f"{name}: state tensor {i} comes back as {_shape(s)}, initial_state gave {_shape(reference[i])}"
            )


def check_network_contract(policy: Any, missions: list[MettaGridConfig], horizon: int = 4) -> None:
    """Raise NetworkContractError unless `policy` (a NeuralPolicy) meets the contract on `missions`."""
    net = policy.network()
    if not isinstance(net, torch.nn.Module):
        raise NetworkContractError(f"network() returned {type(net).__name__}, not a torch.nn.Module")
    device = next(net.parameters(), torch.empty(0)).device
    actions = len(policy.policy_env_info.all_action_names)
    recurrent = bool(getattr(net, "recurrent", False))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for config in missions:
                obs = torch.as_tensor(_first_observations(config), device=device)
                rows = obs.shape[0]
                state = net.initial_state(rows, device)
                if recurrent and state is None:
                    raise NetworkContractError("a recurrent network's initial_state returned None")
                _check_state("initial_state", state, rows)
                # Acting and evaluation: one step, every agent, the full token count.
                new_state = _check_outputs("acting", net(obs[None], state), 1, rows, actions)
                _check_state("acting", new_state, rows, state)
                # The update: L steps over a couple of rows, with resets, as the trainer's sequences.
                sub = obs[: min(2, rows)]
                sequence = sub[None].expand(horizon, *sub.shape).contiguous()
                if getattr(net, "variable_tokens", False):
                    sequence = trim_padding(sequence)
                resets = torch.zeros((horizon, sub.shape[0]), device=device)
                resets[0] = 1.0
                sub_state = net.initial_state(sub.shape[0], device)
                _check_state("update", sub_state, sub.shape[0])
                _check_outputs("update", net(sequence, sub_state, resets), horizon, sub.shape[0], actions)
            _check_round_trip(policy, obs)
    except NetworkContractError:
        raise
    except Exception as exc:  # the network's own error on a contract-shaped input: name where it happened
        raise NetworkContractError(
            f"the network failed on contract-shaped input: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        net.train(was_training)


def _check_round_trip(policy: Any, obs: torch.Tensor) -> None:
    """save_policy_data then load_policy_data into a fresh policy gives the same logits."""
    net = policy.network()
    state = net.initial_state(obs.shape[0], obs.device)
    before = net(obs[None], state)[0]
    with tempfile.TemporaryDirectory(prefix="daf-contract-") as tmp:
        path = str(Path(tmp) / "weights.pt")
        policy.save_policy_data(path)
        fresh = policy.untrained_copy(seed=policy.seed + 1)
        fresh.load_policy_data(path)
    fresh_net = fresh.network().eval()
    after = fresh_net(obs[None], fresh_net.initial_state(obs.shape[0], obs.device))[0]
    if not torch.allclose(before, after, atol=1e-5):
        raise NetworkContractError("save_policy_data/load_policy_data do not round-trip: logits differ after loading")
