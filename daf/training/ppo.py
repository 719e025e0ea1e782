"""PPO for DAF's trainable policies: one readable path from DAFTrainingConfig to the update (CleanRL style).

Clipped objective, GAE, value clipping, entropy bonus, gradient clipping, learning-rate annealing,
minibatches and update epochs. Rollouts are cut into sequences of `bptt_horizon` steps; each sequence
starts from the recurrent state recorded during the rollout (truncated BPTT). Feed-forward networks use
the same path and ignore the state.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mettagrid.policy.policy import PolicySpec
from torch import nn

from daf.config import RESUMABLE_CHANGES, DAFTrainingConfig
from daf.events import ProgressFn, TrainingProgress
from daf.locks import directory_lock
from daf.missions import get_mission
from daf.policies.contract import NetworkContractError, check_network_contract
from daf.policies.neural import NeuralPolicy, load_weights
from daf.policies.registry import PolicyResolutionError, load_policy, require_trainable, resolve_class_path
from daf.policies.tokens import trim_padding
from daf.simulation import env_interface
from daf.training.checkpoints import (
    CONFIG_FILE,
    Checkpoint,
    latest_checkpoint,
    load_trainer_state,
    save_checkpoint,
    write_json,
)
from daf.training.curves import plot_learning_curve, read_metrics
from daf.training.vecenv import VecEnv

# Called after every update with (global_step, policy); may raise StopTraining (e.g. a pruned sweep trial).
UpdateHook = Callable[[int, NeuralPolicy], None]


# Agents stepped per rollout step (num_envs x agents): 65,536 rows of 64-step rollouts of ~50 observation tokens
# already take gigabytes; more is a typo, and would fail late with MemoryError.
MAX_ROLLOUT_ROWS = 65_536


class StopTraining(Exception):
    """Raised by an update hook to end a run early; the run keeps its last checkpoint."""


class TrainingError(ValueError):
    """The training request is invalid; raised before any compute starts."""


@dataclass
class TrainingResult:
    run_id: str
    run_dir: str
    final_checkpoint: str  # weights file: PolicySpec(class_path, data_path=final_checkpoint) loads it
    checkpoint_dir: str  # holds policy_spec.json for mettagrid's loader
    class_path: str
    global_step: int
    resumed_from_step: int
    wall_time_s: float
    agent_steps_per_second: float
    final_mean_reward: float | None  # mean episode reward (sum over agents) of the last update's episodes
    episodes_finished: int
    metrics_path: str
    learning_curve: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(requested: str) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' requested but torch sees no CUDA GPU (use device: auto or cpu)")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _adam_impl(device: torch.device) -> dict[str, bool]:
    """The fused Adam kernel (one pass over all parameters) where this torch build has it, else foreach."""
    try:
        probe = torch.zeros(1, device=device, requires_grad=True)
        torch.optim.Adam([probe], fused=True)
        return {"fused": True}
    except (RuntimeError, ValueError):
        return {"foreach": True}


def _make_policy(config: DAFTrainingConfig, env_info, device: torch.device) -> tuple[NeuralPolicy, str]:
    try:
        class_path = resolve_class_path(config.policy_class_path)
        policy = load_policy(
            PolicySpec(class_path=class_path, init_kwargs={"hidden_size": config.hidden_size, "seed": config.seed}),
            env_info,
            device=str(device),
        )
    except PolicyResolutionError as exc:
        raise TrainingError(str(exc)) from None
    return policy, class_path  # a NeuralPolicy keeping the network contract: validate_training_config checked it


def _check_resumable(config: DAFTrainingConfig, checkpoint: Checkpoint) -> None:
    """A run resumes only under the config it was trained with, give or take settings that do not change what it
    learns (RESUMABLE_CHANGES): continuing it under other hyperparameters, missions or seed would mix two
    trainings under one name, and a finished run would silently hand back its old checkpoint as the new result."""
    saved = json.loads((checkpoint.path / CONFIG_FILE).read_text())
    now = config.model_dump(mode="json")
    differs = sorted(k for k in now.keys() - RESUMABLE_CHANGES if saved.get(k) != now[k])
    if differs:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in differs)
        raise TrainingError(
            f"run {config.run_id!r} in {checkpoint.path.parent.parent} was trained with another config ({details}): "
            "give this training another run_id, or the same settings to continue it"
        )


def validate_training_config(config: DAFTrainingConfig) -> None:
    """Everything that can be checked without compute: missions, policy class, warm-start weights, paths."""
    for mission in config.eval_missions:
        get_mission(mission)
    games = [get_mission(m) for m in config.missions]
    env_interface(games)
    # Each of num_envs environments holds one mission's agents: rows of every rollout tensor.
    rows = config.num_envs * max(g.game.num_agents for g in games)
    if rows > MAX_ROLLOUT_ROWS:
        raise TrainingError(
            f"num_envs ({config.num_envs}) x agents per mission (up to {rows // config.num_envs}) = {rows} rollout "
            f"rows; at most {MAX_ROLLOUT_ROWS}"
        )
    resolve_device(config.device)
    try:
        require_trainable(config.policy_class_path)
    except PolicyResolutionError as exc:
        raise TrainingError(str(exc)) from None
    try:
        policy, _ = _make_policy(config, env_interface(games), resolve_device(config.device))
        check_network_contract(policy, games)
    except NetworkContractError as exc:
        contract = "see the contract in daf/policies/neural.py"
        raise TrainingError(f"policy {config.policy_class_path!r}: {exc} ({contract})") from None
    if config.policy_data_path is not None:
        load_weights(config.policy_data_path)
    run_root = config.checkpoint_root()
    try:
        run_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"checkpoint_dir {run_root} cannot be created: {exc}") from None


def train(
    config: DAFTrainingConfig, progress: ProgressFn | None = None, on_update: UpdateHook | None = None
) -> TrainingResult:
    """Train (or resume) the run `config.run_id` until `num_training_steps` agent-steps. One process at a time per
    run: a second one on the same run directory is refused, and so is resuming a run under another config."""
    validate_training_config(config)
    run_id = config.run_id or f"{config.policy_class_path.rsplit('.', 1)[-1]}-{uuid.uuid4().hex[:8]}"
    run_dir = config.checkpoint_root() / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    with directory_lock(run_dir, f"training run {run_id!r}", TrainingError):
        try:
            return _train(config, run_id, run_dir, progress, on_update)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # a stop signal (daf/interrupts.py): say what is kept
                last = latest_checkpoint(run_dir)
                kept = f"step {last.step} ({last.weights}); run it again to resume" if last else "none yet"
                exc.add_note(f"training run {run_id!r} keeps its last complete checkpoint: {kept}")
            raise


def _train(
    config: DAFTrainingConfig, run_id: str, run_dir: Path, progress: ProgressFn | None, on_update: UpdateHook | None
) -> TrainingResult:
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(config.gpu_memory_fraction)
    # The rollout acts on a few dozen rows per step: one thread (more only add fork/join cost and fight the
    # environment stepping for cores). The update's minibatches are large enough to use every core: on 2 cores
    # 2 threads made the update 1.3x (MLP) to 1.4x (LSTM) faster than 1 (bench/training_throughput.py).
    rollout_threads = 1 if device.type == "cpu" else torch.get_num_threads()
    update_threads = config.torch_threads or len(os.sched_getaffinity(0))
    threads_before = torch.get_num_threads()
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)

    metrics_path = run_dir / "metrics.jsonl"

    envs = VecEnv(config.missions, config.num_envs, config.seed)
    policy, class_path = _make_policy(config, envs.env_info, device)

    # --- resume from the last complete checkpoint, or warm-start from given weights. Weights load before the
    # optimizer exists: loading may rebuild the network (another hidden size), and the optimizer must hold it.
    start_step, update = 0, 0
    resume = latest_checkpoint(run_dir)
    if resume is not None:
        _check_resumable(config, resume)
        policy.load_policy_data(str(resume.weights))
    else:
        metrics_path.unlink(missing_ok=True)
        if config.policy_data_path:
            policy.load_policy_data(config.policy_data_path)
    net = policy.network()
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate, eps=1e-5, **_adam_impl(device))
    if resume is not None:
        state = load_trainer_state(resume)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_step, update = int(state["global_step"]), int(state["update"])
        _truncate_metrics(metrics_path, start_step)
    write_json(run_dir / CONFIG_FILE, config.model_dump(mode="json"))

    # --- sizes
    n = envs.num_rows
    steps = config.num_steps
    horizon = min(config.bptt_horizon, steps)
    batch_size = steps * n
    total_updates = max(1, math.ceil(config.num_training_steps / batch_size))

    # --- rollout storage
    obs_buf = torch.zeros((steps, n, *envs.observations.shape[1:]), dtype=torch.uint8, device=device)
    actions = torch.zeros((steps, n), dtype=torch.long, device=device)
    logprobs = torch.zeros((steps, n), device=device)
    rewards = torch.zeros((steps, n), device=device)
    resets = torch.zeros((steps, n), device=device)
    values = torch.zeros((steps, n), device=device)
    recurrent = getattr(net, "recurrent", False)
    chunk_states = (
        [torch.zeros((steps // horizon, n, s.shape[-1]), device=device) for s in net.initial_state(1, device)]
        if recurrent
        else []
    )

    # Environment buffers seen as tensors without copies (CPU); each step moves the observations to the device
    # once (into obs_buf), rewards stay on the host until the rollout ends, and the only device->host transfer
    # per step is the sampled actions.
    host_obs = torch.from_numpy(envs.observations)
    host_dones = torch.from_numpy(envs.dones)
    host_rewards = torch.zeros((steps, n), dtype=torch.float32)
    if device.type == "cuda":
        host_rewards = host_rewards.pin_memory()
    next_done = torch.ones(n, device=device)
    state = net.initial_state(n, device)
    global_step = start_step
    next_checkpoint = (start_step // config.checkpoint_interval + 1) * config.checkpoint_interval
    started = time.perf_counter()
    episodes_finished = 0
    last_reward: float | None = None
    checkpoint = resume

    try:
        while update < total_updates:
            update += 1
            if config.anneal_lr:
                optimizer.param_groups[0]["lr"] = config.learning_rate * (1.0 - (update - 1) / total_updates)

            # ---- rollout
            torch.set_num_threads(rollout_threads)
            net.eval()
            with torch.no_grad():
                for t in range(steps):
                    obs_buf[t].copy_(host_obs, non_blocking=True)
                    resets[t] = next_done
                    if recurrent and t % horizon == 0:
                        for store, s in zip(chunk_states, state):
                            store[t // horizon] = s * (1.0 - next_done).unsqueeze(-1)
                    logits, value, state = net(obs_buf[t : t + 1], state, resets[t : t + 1])
                    # Same sampling as Categorical(logits=...).sample(), without building the distribution.
                    log_probs = torch.log_softmax(logits[0], -1)
                    action = torch.multinomial(log_probs.exp(), 1, True)
                    logprobs[t] = log_probs.gather(-1, action).squeeze(-1)
                    action = action.squeeze(-1)
                    actions[t], values[t] = action, value[0]
                    host_rewards[t] = torch.from_numpy(envs.step(action.cpu().numpy()))
                    next_done = host_dones.to(device, copy=True, non_blocking=True)
                next_obs = host_obs.to(device)
                rewards.copy_(host_rewards, non_blocking=True)
                global_step += batch_size

                # ---- GAE
                _, next_value, _ = net(next_obs[None], state, next_done[None])
                advantages = torch.zeros_like(rewards)
                last_gae = torch.zeros(n, device=device)
                for t in reversed(range(steps)):
                    if t == steps - 1:
                        non_terminal, next_values = 1.0 - next_done, next_value[0]
                    else:
                        non_terminal, next_values = 1.0 - resets[t + 1], values[t + 1]
                    delta = rewards[t] + config.gamma * next_values * non_terminal - values[t]
                    last_gae = delta + config.gamma * config.gae_lambda * non_terminal * last_gae
                    advantages[t] = last_gae
                returns = advantages + values

            # ---- update over sequences of `horizon` steps
            torch.set_num_threads(update_threads)
            net.train()
            rollout = Rollout(
                # Once per rollout, for networks that take a variable token count (DAF's own): every minibatch then
                # gathers ~10x fewer bytes. Other networks get the full count, as when acting (contract.py).
                obs=trim_padding(obs_buf) if getattr(net, "variable_tokens", False) else obs_buf,
                actions=actions,
                logprobs=logprobs,
                resets=resets,
                values=values,
                advantages=advantages,
                returns=returns,
                chunk_states=chunk_states,
            )
            stats = _ppo_update(config, net, optimizer, rollout, horizon)

            # ---- metrics, progress, checkpoints
            finished = envs.pop_finished()
            episodes_finished += len(finished)
            if finished:
                last_reward = float(np.mean([o.total_reward for _, o in finished]))
            elapsed = time.perf_counter() - started
            sps = (global_step - start_step) / elapsed if elapsed > 0 else 0.0
            record = {
                "step": global_step,
                "update": update,
                "sps": sps,
                "episode_reward": last_reward,
                "episodes": len(finished),
                "lr": optimizer.param_groups[0]["lr"],
                **stats,
            }
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            if progress:
                progress(TrainingProgress(global_step, total_updates * batch_size, sps, last_reward))
            if global_step >= next_checkpoint or update == total_updates:
                trainer_state = {
                    "optimizer": optimizer.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "global_step": global_step,
                    "update": update,
                }
                checkpoint = save_checkpoint(
                    run_dir,
                    global_step,
                    policy,
                    class_path,
                    trainer_state,
                    config.model_dump(mode="json"),
                    config.max_checkpoints_to_keep,
                )
                plot_learning_curve(read_metrics(metrics_path), run_dir / "learning_curve.png", f"{run_id}")
                next_checkpoint = (global_step // config.checkpoint_interval + 1) * config.checkpoint_interval
            if on_update is not None:
                on_update(global_step, policy)
    finally:
        envs.close()
        torch.set_num_threads(threads_before)

    wall = time.perf_counter() - started
    return TrainingResult(
        run_id=run_id,
        run_dir=str(run_dir),
        final_checkpoint=str(checkpoint.weights),
        checkpoint_dir=str(checkpoint.path),
        class_path=class_path,
        global_step=global_step,
        resumed_from_step=start_step,
        wall_time_s=wall,
        agent_steps_per_second=(global_step - start_step) / wall if wall > 0 else 0.0,
        final_mean_reward=last_reward,
        episodes_finished=episodes_finished,
        metrics_path=str(metrics_path),
        learning_curve=str(run_dir / "learning_curve.png"),
    )


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
    chunk_states: list[torch.Tensor]  # recurrent state at the start of each `horizon` chunk: (chunks, rows, H)


def _ppo_update(
    config: DAFTrainingConfig,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    horizon: int,
) -> dict[str, float]:
    device = rollout.obs.device
    steps, n = rollout.actions.shape
    num_sequences = (steps // horizon) * n
    minibatch = max(1, num_sequences // config.num_minibatches)
    offsets = torch.arange(horizon, device=device)
    # Rollout tensors seen as (steps * n, ...) so a minibatch is gathered with index_select (contiguous row
    # copies) rather than two-dimensional advanced indexing.
    flat_obs = rollout.obs.reshape(-1, *rollout.obs.shape[2:])
    flat = {
        name: getattr(rollout, name).reshape(-1)
        for name in ("actions", "logprobs", "resets", "values", "advantages", "returns")
    }
    flat_states = [s.reshape(-1, s.shape[-1]) for s in rollout.chunk_states]
    # Statistics stay on the device until the end (no host sync per minibatch).
    clipfrac_sum, clipfrac_count = torch.zeros((), device=device), 0
    approx_kl = torch.zeros((), device=device)
    pg_loss = v_loss = entropy_loss = torch.zeros((), device=device)
    for _epoch in range(config.update_epochs):
        order = torch.randperm(num_sequences, device=device)
        for start in range(0, num_sequences, minibatch):
            seq = order[start : start + minibatch]
            chunk, row = seq // n, seq % n
            t_idx = (chunk[:, None] * horizon + offsets[None, :]).T  # (horizon, M)
            idx = (t_idx * n + row[None, :]).reshape(-1)  # flat (time, row) positions, time-major
            shape = t_idx.shape

            def gather(name: str, idx=idx, shape=shape) -> torch.Tensor:
                return flat[name].index_select(0, idx).view(shape)

            # chunk_states[k] is (chunks, n, H): the sequence's (chunk, row) entry is at chunk * n + row == seq.
            state = tuple(s.index_select(0, seq) for s in flat_states) if flat_states else None
            # The chunk's stored state already had resets applied; only resets inside the chunk matter.
            seq_resets = gather("resets")
            seq_resets[0] = 0.0
            mb_obs = flat_obs.index_select(0, idx).view(*shape, *flat_obs.shape[1:])
            logits, new_values, _ = net(mb_obs, state, seq_resets)
            log_probs = torch.log_softmax(logits, -1)
            new_logprob = log_probs.gather(-1, gather("actions").unsqueeze(-1)).squeeze(-1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            log_ratio = new_logprob - gather("logprobs")
            ratio = log_ratio.exp()
            with torch.no_grad():
                approx_kl = ((ratio - 1) - log_ratio).mean()
                clipfrac_sum += ((ratio - 1.0).abs() > config.clip_coef).float().mean()
                clipfrac_count += 1

            mb_adv = gather("advantages")
            if config.norm_adv:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
            pg_loss = torch.max(
                -mb_adv * ratio, -mb_adv * torch.clamp(ratio, 1 - config.clip_coef, 1 + config.clip_coef)
            ).mean()

            mb_returns, mb_values = gather("returns"), gather("values")
            if config.clip_vloss:
                v_clipped = mb_values + torch.clamp(new_values - mb_values, -config.clip_coef, config.clip_coef)
                v_loss = 0.5 * torch.max((new_values - mb_returns) ** 2, (v_clipped - mb_returns) ** 2).mean()
            else:
                v_loss = 0.5 * ((new_values - mb_returns) ** 2).mean()
            entropy_loss = entropy.mean()
            loss = pg_loss - config.ent_coef * entropy_loss + config.vf_coef * v_loss

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
    }


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be produced again)."""
    kept = [record for record in read_metrics(path) if record["step"] <= step]
    path.write_text("".join(json.dumps(record) + "\n" for record in kept))
