"""PPO for DAF's trainable policies, read as CleanRL's single-file PPO reads: `train()` runs one loop of named steps.

    for each update:   anneal the learning rate (and the entropy bonus)
                       collect a rollout            (daf.training.collector: now, or during the last update)
                       compute advantages (GAE)     (daf.training.rollout: compute_gae)
                       the PPO update               (daf.training.update: ppo_update)
                       record metrics and progress  (daf.training.metrics)
                       checkpoint when due          (daf.training.checkpoints)

Every hyperparameter comes from DAFTrainingConfig. A run resumes from its last complete checkpoint; the process's
thread count and GPU memory cap are restored when it ends and its randomness is its own
(daf.training.process_state).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daf.config import DAFTrainingConfig
from daf.events import ProgressFn, TrainingProgress
from daf.interrupts import raise_if_stop_requested, stop_at_safe_points
from daf.locks import directory_lock
from daf.missions import get_mission
from daf.policies.neural import NeuralPolicy
from daf.reward_shaping import mission_reward, shaped
from daf.simulation import EpisodeOutcome
from daf.training.checkpoints import (
    CONFIG_FILE,
    INPUTS_FILE,
    Checkpoint,
    latest_checkpoint,
    load_trainer_state,
    save_checkpoint,
    write_json,
)
from daf.training.collector import Collector
from daf.training.curves import plot_learning_curve
from daf.training.metrics import METRICS_FILE, append_metrics, read_metrics, truncate_metrics
from daf.training.process_state import RunGenerators, process_settings_scope, thread_counts
from daf.training.reward_scale import RewardScaler
from daf.training.rollout import compute_gae
from daf.training.tensorboard import TENSORBOARD_DIR, TensorBoardLog
from daf.training.update import make_optimizer, ppo_update
from daf.training.validation import (
    TrainingError,
    check_resumable,
    make_policy,
    resolve_device,
    training_inputs,
    validate_training_config,
)
from daf.vecenv import BlockStepping, make_vecenv

# Called after every update with (global_step, policy); may raise StopTraining (e.g. a pruned sweep trial).
UpdateHook = Callable[[int, NeuralPolicy], None]

LEARNING_CURVE_FILE = "learning_curve.png"


class StopTraining(Exception):
    """Raised by an update hook to end a run early; the run keeps its last checkpoint."""


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
    tensorboard_dir: str  # TensorBoard event files of the same records as metrics_path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
            device = resolve_device(config.device)
            # A stop signal takes effect at the next step or update (daf/interrupts.py: the env pool's waits and
            # the checkpoint writes are not interrupted half-way).
            with process_settings_scope(device, config.gpu_memory_fraction), stop_at_safe_points():
                return _train(config, run_id, run_dir, device, progress, on_update)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # a stop signal (daf/interrupts.py): say what is kept
                last = latest_checkpoint(run_dir)
                kept = f"step {last.step} ({last.weights}); run it again to resume" if last else "none yet"
                exc.add_note(f"training run {run_id!r} keeps its last complete checkpoint: {kept}")
            raise


def _train(
    config: DAFTrainingConfig,
    run_id: str,
    run_dir: Path,
    device: torch.device,
    progress: ProgressFn | None,
    on_update: UpdateHook | None,
) -> TrainingResult:
    rollout_threads, update_threads = thread_counts(device, config.torch_threads, config.overlap_update)
    envs = make_vecenv(
        config.missions,
        config.num_envs,
        config.seed,
        config.num_env_workers,
        config.env_overlap,
        config.mission_weights,
        {m: shaped(get_mission(m), config.reward_shaping) for m in config.missions},
    )
    run = collector = None
    try:
        run = _start_or_resume(config, run_id, run_dir, envs, device)
        collector = Collector(
            envs,
            run.net,
            config.num_steps,
            config.bptt_horizon,
            device,
            run.generators.acting,
            ahead=config.overlap_update,
        )
        total_updates = max(1, math.ceil(config.num_training_steps / collector.batch_size))
        next_checkpoint = _next_checkpoint(run.start_step, config.checkpoint_interval)
        started = time.perf_counter()
        while run.update < total_updates:
            run.update += 1
            remaining = 1.0 - (run.update - 1) / total_updates  # of the run, at this update's start
            if config.anneal_lr:
                run.optimizer.param_groups[0]["lr"] = config.learning_rate * remaining
            ent_coef = config.ent_coef * remaining if config.anneal_ent else config.ent_coef

            torch.set_num_threads(rollout_threads)
            # With overlap_update, the next rollout starts collecting here and runs during this update.
            buffer, next_value = collector.next(run.net, more=run.update < total_updates)
            if run.reward_scaler is not None:
                buffer.rewards.copy_(run.reward_scaler.scale(buffer.rewards, buffer.resets))
            advantages, returns = compute_gae(buffer, next_value, config.gamma, config.gae_lambda)
            run.global_step += buffer.batch_size

            torch.set_num_threads(update_threads)
            rollout = buffer.for_update(advantages, returns)
            stats = ppo_update(config, run.net, run.optimizer, rollout, run.generators.sampling, ent_coef)

            sps = _record(run, buffer.finished, stats, time.perf_counter() - started)
            if progress:
                progress(TrainingProgress(run.global_step, total_updates * buffer.batch_size, sps, run.last_reward))
            if run.global_step >= next_checkpoint or run.update == total_updates:
                _checkpoint(run)
                next_checkpoint = _next_checkpoint(run.global_step, config.checkpoint_interval)
            raise_if_stop_requested()  # a stop signal received during the update (daf/interrupts.py)
            if on_update is not None:
                on_update(run.global_step, run.policy)
    finally:
        if collector is not None:
            collector.close()  # before the environments: a background rollout may be stepping them
        envs.close()
        if run is not None:
            run.tensorboard.close()
    return run.result(time.perf_counter() - started)


@dataclass
class _Run:
    """One training run's state between updates (CleanRL keeps these as the script's variables)."""

    config: DAFTrainingConfig
    run_id: str
    run_dir: Path
    policy: NeuralPolicy
    class_path: str
    optimizer: torch.optim.Optimizer
    generators: RunGenerators
    start_step: int  # where this process started: 0, or the step of the checkpoint it resumed from
    global_step: int
    update: int
    checkpoint: Checkpoint | None  # the latest complete checkpoint
    tensorboard: TensorBoardLog  # the metrics log's records again, as TensorBoard events
    reward_scaler: RewardScaler | None  # with norm_reward
    episodes_finished: int = 0
    last_reward: float | None = None  # mean episode reward of the latest update that finished episodes
    last_shaped_reward: float | None = None  # the same with reward_shaping's part, when it shapes

    @property
    def net(self) -> torch.nn.Module:
        return self.policy.network()

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS_FILE

    def result(self, wall: float) -> TrainingResult:
        return TrainingResult(
            run_id=self.run_id,
            run_dir=str(self.run_dir),
            final_checkpoint=str(self.checkpoint.weights),
            checkpoint_dir=str(self.checkpoint.path),
            class_path=self.class_path,
            global_step=self.global_step,
            resumed_from_step=self.start_step,
            wall_time_s=wall,
            agent_steps_per_second=(self.global_step - self.start_step) / wall if wall > 0 else 0.0,
            final_mean_reward=self.last_reward,
            episodes_finished=self.episodes_finished,
            metrics_path=str(self.metrics_path),
            learning_curve=str(self.run_dir / LEARNING_CURVE_FILE),
            tensorboard_dir=str(self.run_dir / TENSORBOARD_DIR),
        )


def _start_or_resume(
    config: DAFTrainingConfig, run_id: str, run_dir: Path, envs: BlockStepping, device: torch.device
) -> _Run:
    """The run from its last complete checkpoint (weights, optimizer, random stream, counters), else a fresh one,
    warm-started from `policy_data_path` when given. Weights load before the optimizer exists: loading may rebuild
    the network (another hidden size), and the optimizer must hold it."""
    policy, class_path = make_policy(config, envs.env_info, device)
    generators = RunGenerators(config.seed, device, separate_acting=config.overlap_update)
    metrics_path = run_dir / METRICS_FILE
    resume = latest_checkpoint(run_dir)
    inputs = training_inputs(config)
    if resume is not None:
        check_resumable(config, resume, inputs)
        policy.load_policy_data(str(resume.weights))
    else:
        metrics_path.unlink(missing_ok=True)
        if config.policy_data_path:
            policy.load_policy_data(config.policy_data_path)
    optimizer = make_optimizer(policy.network(), config.learning_rate, device)
    reward_scaler = RewardScaler(envs.num_rows, config.gamma, device) if config.norm_reward else None
    start_step, update = 0, 0
    if resume is not None:
        state = load_trainer_state(resume)
        optimizer.load_state_dict(state["optimizer"])
        if reward_scaler is not None:
            reward_scaler.load_state_dict(state["reward_scale"])
        start_step, update = int(state["global_step"]), int(state["update"])
        generators.resume(state["torch_rng"], update)
        truncate_metrics(metrics_path, start_step)
    write_json(run_dir / CONFIG_FILE, config.model_dump(mode="json"))
    write_json(run_dir / INPUTS_FILE, inputs)
    return _Run(
        config=config,
        run_id=run_id,
        run_dir=run_dir,
        policy=policy,
        class_path=class_path,
        optimizer=optimizer,
        generators=generators,
        start_step=start_step,
        global_step=start_step,
        update=update,
        checkpoint=resume,
        tensorboard=TensorBoardLog(run_dir, resumed_from=start_step if resume is not None else None),
        reward_scaler=reward_scaler,
    )


def _record(run: _Run, finished: list[tuple[str, EpisodeOutcome]], stats: dict[str, float], elapsed: float) -> float:
    """Append the update's record to the metrics log; returns its agent-steps per second."""
    run.episodes_finished += len(finished)
    shaping = run.config.reward_shaping
    if finished:  # the mission's own reward, as evaluation scores it; with shaping, the shaped return besides
        run.last_reward = float(np.mean([mission_reward(o, shaping) for _, o in finished]))
        if shaping:
            run.last_shaped_reward = float(np.mean([o.total_reward for _, o in finished]))
    sps = (run.global_step - run.start_step) / elapsed if elapsed > 0 else 0.0
    record = {
        "step": run.global_step,
        "update": run.update,
        "sps": sps,
        "episode_reward": run.last_reward,
        **({"shaped_episode_reward": run.last_shaped_reward} if shaping else {}),
        "episodes": len(finished),
        "lr": run.optimizer.param_groups[0]["lr"],
        **stats,
    }
    append_metrics(run.metrics_path, record)
    run.tensorboard.write(record)
    return sps


def _checkpoint(run: _Run) -> None:
    """Save weights, optimizer, random stream and counters as the run's newest checkpoint; redraw the curve."""
    trainer_state = {
        "optimizer": run.optimizer.state_dict(),
        "torch_rng": run.generators.cpu.get_state(),
        "global_step": run.global_step,
        "update": run.update,
    }
    if run.reward_scaler is not None:
        trainer_state["reward_scale"] = run.reward_scaler.state_dict()
    config = run.config
    run.checkpoint = save_checkpoint(
        run.run_dir,
        run.global_step,
        run.policy,
        run.class_path,
        trainer_state,
        config.model_dump(mode="json"),
        config.max_checkpoints_to_keep,
    )
    run.tensorboard.flush()
    plot_learning_curve(read_metrics(run.metrics_path), run.run_dir / LEARNING_CURVE_FILE, run.run_id)


def _next_checkpoint(step: int, interval: int) -> int:
    return (step // interval + 1) * interval
