"""What refuses a training request, and when: before any compute (`validate_training_config`) and before a run
directory is resumed (`check_resumable`); plus the device and policy that both the checks and the run build."""

from __future__ import annotations

import json
from typing import Any

import torch

from daf.config import RESUMABLE_CHANGES, DAFTrainingConfig
from daf.content import mission_digest
from daf.errors import InputError
from daf.missions import get_mission
from daf.policies.contract import NetworkContractError, check_network_contract
from daf.policies.hosted import trainable_spec
from daf.policies.neural import NeuralPolicy, load_weights
from daf.policies.registry import PolicyResolutionError, load_policy, require_trainable, resolve_class_path
from daf.reward_shaping import check_shaping
from daf.simulation import env_interface
from daf.training.checkpoints import CONFIG_FILE, INPUTS_FILE, Checkpoint

# Agents stepped per rollout step (num_envs x agents): 65,536 rows of 64-step rollouts of ~50 observation tokens
# already take gigabytes; more is a typo, and would fail late with MemoryError.
MAX_ROLLOUT_ROWS = 65_536


class TrainingError(InputError, ValueError):
    """The training request is invalid; raised before any compute starts."""


def resolve_device(requested: str) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' requested but torch sees no CUDA GPU (use device: auto or cpu)")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_policy(config: DAFTrainingConfig, env_info, device: torch.device) -> tuple[NeuralPolicy, str]:
    """The untrained policy of `config` and its full class path; its initial weights come from `config.seed`."""
    try:
        class_path = resolve_class_path(config.policy_class_path)
        init_kwargs = {"hidden_size": config.hidden_size, "seed": config.seed}
        policy = load_policy(trainable_spec(class_path, init_kwargs), env_info, device=str(device))
    except PolicyResolutionError as exc:
        raise TrainingError(str(exc)) from None
    return policy, class_path  # a NeuralPolicy keeping the network contract: validate_training_config checked it


def validate_training_config(config: DAFTrainingConfig) -> None:
    """Everything that can be checked without compute: missions, policy class, warm-start weights, paths."""
    for mission in config.eval_missions:
        get_mission(mission)
    games = [get_mission(m) for m in config.missions]
    env_interface(games)
    try:
        check_shaping(dict(zip(config.missions, games)), config.reward_shaping)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    # Each of num_envs environments holds one mission's agents: rows of every rollout tensor.
    rows = config.num_envs * max(g.game.num_agents for g in games)
    if rows > MAX_ROLLOUT_ROWS:
        raise TrainingError(
            f"num_envs ({config.num_envs}) x agents per mission (up to {rows // config.num_envs}) = {rows} rollout "
            f"rows; at most {MAX_ROLLOUT_ROWS}"
        )
    resolve_device(config.device)
    try:
        require_trainable(config.policy_class_path, env_interface(games))
    except PolicyResolutionError as exc:
        raise TrainingError(str(exc)) from None
    try:
        policy, _ = make_policy(config, env_interface(games), resolve_device(config.device))
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


def check_resumable(config: DAFTrainingConfig, checkpoint: Checkpoint, inputs: dict[str, Any]) -> None:
    """A run resumes only under the config it was trained with, give or take settings that do not change what it
    learns (RESUMABLE_CHANGES): continuing it under other hyperparameters, missions or seed would mix two
    trainings under one name, and a finished run would silently hand back its old checkpoint as the new result.
    `inputs`: `training_inputs(config)`, the content the run reads now."""
    try:
        saved = json.loads((checkpoint.path / CONFIG_FILE).read_text())
        if not isinstance(saved, dict):
            raise ValueError(f"holds a {type(saved).__name__}, not a config")
    except (OSError, ValueError) as exc:  # a step_<N> folder DAF did not write, or one damaged since
        raise TrainingError(
            f"{checkpoint.path} is not a checkpoint DAF can resume ({CONFIG_FILE}: {exc}): move it out of the run "
            "directory, or give this training another run_id"
        ) from None
    now = config.model_dump(mode="json")
    differs = sorted(k for k in now.keys() - RESUMABLE_CHANGES if saved.get(k) != now[k])
    if differs:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in differs)
        raise TrainingError(
            f"run {config.run_id!r} in {checkpoint.path.parent.parent} was trained with another config ({details}): "
            "give this training another run_id, or the same settings to continue it"
        )
    # The config names missions; a mission file edited at the same path is another task under the same name.
    recorded = checkpoint.path.parent.parent / INPUTS_FILE
    if recorded.is_file():  # absent only in runs checkpointed before DAF recorded it
        then = json.loads(recorded.read_text()).get("missions_sha256", {})
        changed = [m for m, digest in inputs["missions_sha256"].items() if then.get(m) != digest]
        if changed:
            raise TrainingError(
                f"run {config.run_id!r} in {checkpoint.path.parent.parent} was trained on other content of "
                f"mission(s) {', '.join(changed)} (edited since): give this training another run_id, or restore "
                "the mission files to continue it"
            )


def training_inputs(config: DAFTrainingConfig) -> dict[str, Any]:
    """The content digests of what a training reads besides its config (its missions, named or from files)."""
    return {"missions_sha256": {m: mission_digest(m) for m in dict.fromkeys(config.missions)}}
