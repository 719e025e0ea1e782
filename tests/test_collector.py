"""`overlap_update` (daf.training.collector): the next rollout is collected during the PPO update, with the weights
from before it. Same seed, same weights, whatever the threads' timing or where the environments step; every episode
counted once, in the update whose rollout it ended in; no thread or worker left after an error or a stop."""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
import torch

from daf.config import ConfigError, DAFTrainingConfig
from daf.training import StopTraining, train
from daf.training.metrics import read_metrics
from daf.training.rollout import RolloutBuffer, compute_gae
from daf.training.update import make_optimizer, ppo_update
from daf.training.validation import make_policy
from daf.vecenv import EnvWorkerError, VecEnv

from .test_vecenv import _gone, _worker_pids


def _config(tmp_path, run_id: str, **settings) -> DAFTrainingConfig:
    values = dict(
        policy_class_path="mlp",
        missions=["training_facility_1"],
        num_envs=4,
        num_steps=32,
        bptt_horizon=8,
        num_training_steps=4096,  # 8 updates of 512 agent-steps
        checkpoint_dir=str(tmp_path),
        run_id=run_id,
        progress=False,
        overlap_update=True,
    )
    return DAFTrainingConfig(**{**values, **settings})


def _weights(result) -> dict[str, torch.Tensor]:
    return torch.load(result.final_checkpoint, weights_only=True)["state_dict"]


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _rollout_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("daf-rollout")]


@pytest.mark.parametrize("policy", ["mlp", "lstm"])
def test_an_overlapped_run_gives_the_same_weights_every_time_and_wherever_it_steps(tmp_path, policy):
    first = train(_config(tmp_path, "a", policy_class_path=policy))
    again = train(_config(tmp_path, "b", policy_class_path=policy))
    assert _equal(_weights(first), _weights(again))
    # Env workers with one block step exactly what the learner's process steps: the same weights again.
    workers = train(_config(tmp_path, "c", policy_class_path=policy, num_env_workers=2, env_overlap=False))
    assert _equal(_weights(workers), _weights(first))
    # The lag is real: the weights differ from a run that collects after each update.
    synchronous = train(_config(tmp_path, "d", policy_class_path=policy, overlap_update=False))
    assert not _equal(_weights(synchronous), _weights(first))
    assert not _rollout_threads()


def test_every_episode_is_counted_once_in_the_update_whose_rollout_it_ended_in(tmp_path):
    overlapped = train(_config(tmp_path, "a"))
    synchronous = train(_config(tmp_path, "b", overlap_update=False))
    # Episodes of training_facility_1 last its 120 steps whatever the policy does: both runs end the same ones at
    # the same environment steps, so each update's count must agree, and their sum with the result's.
    per_update = [r["episodes"] for r in read_metrics(Path(overlapped.metrics_path))]
    assert per_update == [r["episodes"] for r in read_metrics(Path(synchronous.metrics_path))]
    assert sum(per_update) == overlapped.episodes_finished == synchronous.episodes_finished > 0
    assert per_update[0] == 0 and per_update[3] == 4  # the 4 environments end their first episodes in rollout 4


def test_a_resumed_overlapped_run_continues_the_same_way_from_the_same_checkpoint(tmp_path):
    first = train(_config(tmp_path, "a", num_training_steps=2048, checkpoint_interval=1024))
    shutil.copytree(first.run_dir, tmp_path / "b")
    longer = {"num_training_steps": 4096}
    resumed = [train(_config(tmp_path, run_id, **longer)) for run_id in ("a", "b")]
    assert all(r.resumed_from_step == 2048 and r.global_step == 4096 for r in resumed)
    assert _equal(_weights(resumed[0]), _weights(resumed[1]))


def test_an_error_during_an_overlapped_update_stops_the_rollout_and_its_workers(tmp_path):
    def fail(step, policy):
        raise RuntimeError("the hook failed")  # while the next rollout is being collected

    with pytest.raises(RuntimeError, match="the hook failed"):
        train(_config(tmp_path, "a", num_env_workers=2), on_update=fail)
    assert not _rollout_threads()
    assert _gone(_worker_pids(os.getpid()), timeout=1.0)

    with pytest.raises(StopTraining):
        train(_config(tmp_path, "b"), on_update=lambda step, policy: (_ for _ in ()).throw(StopTraining()))
    assert not _rollout_threads()


def test_a_worker_killed_during_a_background_rollout_is_a_clear_training_error(tmp_path):
    def kill_a_worker(step, policy):
        if step == 512:  # the second rollout is being collected in the background now
            os.kill(_worker_pids(os.getpid())[0], signal.SIGKILL)

    with pytest.raises(EnvWorkerError, match=r"env worker \d \(pid \d+, slots .*signal SIGKILL"):
        train(_config(tmp_path, "a", num_env_workers=2), on_update=kill_a_worker)
    assert not _rollout_threads()
    assert _gone(_worker_pids(os.getpid()), timeout=5.0)


def test_overlap_update_is_validated_like_every_field():
    with pytest.raises(ConfigError, match="overlap_update"):
        DAFTrainingConfig.from_dict({"overlap_update": "sometimes"})


@pytest.mark.parametrize("policy", ["mlp", "lstm"])
def test_the_stale_correction_is_the_plain_update_when_the_acting_weights_are_current(tmp_path, policy):
    """Decoupled PPO (daf.training.update): with the acting weights equal to the network's, the proximal
    probabilities are the acting ones, every sample's weight is 1, and the update is PPO's own."""
    config = _config(tmp_path, "a", policy_class_path=policy, overlap_update=False)
    envs = VecEnv(config.missions, config.num_envs, seed=0)
    try:
        policy_obj, _ = make_policy(config, envs.env_info, torch.device("cpu"))
        net = policy_obj.network()
        buffer = RolloutBuffer(envs, net, config.num_steps, config.bptt_horizon, torch.device("cpu"))
        next_value = buffer.collect(envs, net, torch.Generator().manual_seed(0))
    finally:
        envs.close()
    advantages, returns = compute_gae(buffer, next_value, config.gamma, config.gae_lambda)
    results = []
    for stale in (False, True):
        copy_net = copy.deepcopy(net)
        rollout = dataclasses.replace(buffer.for_update(advantages, returns), stale=stale)
        optimizer = make_optimizer(copy_net, config.learning_rate, torch.device("cpu"))
        stats = ppo_update(config, copy_net, optimizer, rollout, torch.Generator().manual_seed(1))
        results.append((copy_net.state_dict(), stats))
    (plain, plain_stats), (corrected, corrected_stats) = results
    assert plain.keys() == corrected.keys()
    for name in plain:
        torch.testing.assert_close(corrected[name], plain[name], rtol=1e-4, atol=1e-5)
    assert corrected_stats["approx_kl"] == pytest.approx(plain_stats["approx_kl"], abs=1e-5)
