"""Evaluation throughput: DAF's batched `evaluate` vs mettagrid's `run_multi_episode_rollout`.

Both run the same trained LSTM weights on the same mission in this process. DAF steps all agents of
`--concurrent` episodes with one network call per step (`step_batch`); mettagrid's runner builds an
observation object per agent per step and calls the policy once per agent. Without `--checkpoint` a
small LSTM is trained first (inside the bench, not timed). Figure: agent-steps/s; target DAF >= 5x.

    python bench/eval_throughput.py [--quick] [--checkpoint WEIGHTS] [--mission NAME] [--episodes N] [--device cuda]

`--device` is where both runners put the network (the training run for the weights stays on the CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mettagrid.policy.policy import PolicySpec  # noqa: E402
from mettagrid.runner.rollout import run_multi_episode_rollout  # noqa: E402

from daf.config import DAFTrainingConfig  # noqa: E402
from daf.evaluation import evaluate  # noqa: E402
from daf.missions import get_mission  # noqa: E402
from daf.training.ppo import train  # noqa: E402

CLASS_PATH = "daf.policies.neural.LSTMPolicy"
TARGET = 5.0


def train_checkpoint(mission: str, steps: int, workdir: str) -> str:
    config = DAFTrainingConfig(
        policy_class_path="lstm",
        missions=[mission],
        num_training_steps=steps,
        checkpoint_dir=workdir,
        run_id="eval-bench",
        checkpoint_interval=10**12,
        progress=False,
        device="cpu",
        torch_threads=torch.get_num_threads(),
    )
    return train(config).final_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer episodes and a shorter training run")
    parser.add_argument("--checkpoint", default=None, help="LSTM weights file (default: train one briefly)")
    parser.add_argument("--mission", default="training_facility_1")
    parser.add_argument("--episodes", type=int, default=None, help="DAF episodes (default 64, quick 16)")
    parser.add_argument("--mettagrid-episodes", type=int, default=None, help="default 8, quick 2")
    parser.add_argument("--concurrent", type=int, default=8, help="DAF concurrent_episodes")
    parser.add_argument("--train-steps", type=int, default=None, help="default 100k, quick 30k")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the network runs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    daf_episodes = args.episodes or (16 if args.quick else 64)
    mg_episodes = args.mettagrid_episodes or (2 if args.quick else 8)
    train_steps = args.train_steps or (30_000 if args.quick else 100_000)

    with tempfile.TemporaryDirectory(prefix="daf-eval-bench-") as workdir:
        weights = args.checkpoint
        if weights is None:
            t = time.perf_counter()
            weights = train_checkpoint(args.mission, train_steps, workdir)
            print(f"trained an LSTM for {train_steps:,} agent-steps in {time.perf_counter() - t:.1f} s")
        spec = PolicySpec(class_path=CLASS_PATH, data_path=weights)

        # DAF (warm-up episode first: imports and the first network call are not part of the rate)
        evaluate(spec, args.mission, 1, seed=1, concurrent_episodes=1, device=args.device)
        daf = evaluate(
            spec, args.mission, daf_episodes, seed=0, concurrent_episodes=args.concurrent, device=args.device
        )
        daf_rate = daf.agent_steps / daf.wall_time_s

        # mettagrid's runner, every agent driven by the same policy spec
        env_cfg = get_mission(args.mission)
        num_agents = env_cfg.game.num_agents
        start = time.perf_counter()
        result, _ = run_multi_episode_rollout(
            policy_specs=[spec],
            assignments=[0] * num_agents,
            env_cfg=env_cfg,
            episodes=mg_episodes,
            seed=0,
            max_action_time_ms=60_000,
            device=args.device,
        )
        mg_wall = time.perf_counter() - start
        mg_steps = sum(ep.steps * len(ep.rewards) for ep in result.episodes)
        mg_rate = mg_steps / mg_wall
        mg_reward = float(np.mean([sum(ep.rewards) for ep in result.episodes]))

    ratio = daf_rate / mg_rate
    source = weights if args.checkpoint else "(trained above)"
    print(f"mission {args.mission}, device {args.device}, LSTM weights {source}")
    header = (
        f"{'runner':<44} {'episodes':>8} {'agent-steps':>12} {'wall s':>8} {'agent-steps/s':>14} {'mean reward':>12}"
    )
    print(header)
    print("-" * len(header))
    print(
        f"{'DAF evaluate (concurrent=' + str(args.concurrent) + ')':<44} {daf_episodes:>8} {daf.agent_steps:>12,} "
        f"{daf.wall_time_s:>8.2f} {daf_rate:>14,.0f} {np.mean(daf.rewards):>12.1f}"
    )
    print(
        f"{'mettagrid run_multi_episode_rollout':<44} {mg_episodes:>8} {mg_steps:>12,} {mg_wall:>8.2f} "
        f"{mg_rate:>14,.0f} {mg_reward:>12.1f}"
    )
    print(f"DAF / mettagrid: {ratio:.1f}x   target >= {TARGET:.0f}x: {'PASS' if ratio >= TARGET else 'MISS'}")


if __name__ == "__main__":
    main()
