"""Trainer throughput vs raw mettagrid stepping, on one mission, in one process.

Measures, in this order: the raw stepping rate with random actions (bench/mettagrid_stepping.py, episode
resets included), the PPO trainer's agent-steps/s for `mlp` and for `lstm` (daf.training.ppo.train with the
default DAFTrainingConfig unless flags override it), then the raw rate again; the reference raw rate is the
mean of the two raw measurements (it drifts when the machine is shared). Trainer rates are steady state:
from the end of the first update to the end of the last one before the final checkpoint (imports, the first
update and the final checkpoint/plot are left out); the overall rate reported by `train` is shown too.
DAF's VecEnv alone (random actions; the trainer's own environment, which skips Simulation.step's Python
wrapper) is measured too, with the trainer's ratio to it: a stricter bar than the target's.

Each policy runs once per entry of `--env-workers` (DAFTrainingConfig.num_env_workers; 0 = stepping in the
learner's process, the reference), and with `--overlap-update` once more per entry with
DAFTrainingConfig.overlap_update (the next rollout collected during the PPO update), at otherwise equal settings;
every other row shows its speed-up over the in-process, synchronous row (target >= 1.3x, issue #19) and, like
every trainer row, its share of the VecEnv-alone rate.

Targets: feed-forward >= 30% of raw, LSTM >= 20% of raw (pufferlib reaches ~25% / ~12%); env workers or
overlap_update >= 1.3x the in-process synchronous trainer.

    python bench/training_throughput.py [--quick] [--device cpu|cuda|auto] [--num-envs N] [--steps N]
        [--threads N] [--mission NAME] [--policies mlp,lstm] [--env-workers 0,1] [--no-overlap]
        [--overlap-update]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from mettagrid_stepping import raw_stepping_rate  # noqa: E402

from daf.config import DAFTrainingConfig  # noqa: E402
from daf.training.ppo import train  # noqa: E402
from daf.vecenv import VecEnv  # noqa: E402

TARGETS = {"mlp": 0.30, "lstm": 0.20}
WORKER_SPEEDUP_TARGET = 1.3


def vecenv_rate(mission: str, num_envs: int, seconds: float) -> float:
    """Agent-steps/s of DAF's VecEnv (the trainer's environment: C++ step per slot, no Python wrapper) with
    random actions: the trainer's own environment cost, a higher bar than mettagrid's Simulation.step."""
    envs = VecEnv([mission], num_envs, seed=0)
    pool = np.random.default_rng(0).integers(0, len(envs.env_info.all_action_names), size=(256, envs.num_rows))
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for actions in pool:
            envs.step(actions)
        steps += len(pool)
    rate = steps * envs.num_rows / (time.perf_counter() - start)
    envs.close()
    return rate


def trainer_rate(
    policy: str,
    mission: str,
    steps: int,
    device: str,
    num_envs: int | None,
    threads: int | None,
    workdir: str,
    env_workers: int = 0,
    overlap: bool = True,
    overlap_update: bool = False,
) -> dict[str, float]:
    overrides = {"num_envs": num_envs} if num_envs else {}
    config = DAFTrainingConfig(
        num_env_workers=env_workers,
        env_overlap=overlap,
        overlap_update=overlap_update,
        policy_class_path=policy,
        missions=[mission],
        num_training_steps=steps,
        checkpoint_dir=workdir,
        run_id=f"bench-{policy}-{os.getpid()}-{time.time_ns()}",
        checkpoint_interval=10**12,
        progress=False,
        device=device,
        torch_threads=threads,
        **overrides,
    )
    marks: list[tuple[int, float, float]] = []
    result = train(
        config, on_update=lambda step, _policy: marks.append((step, time.perf_counter(), time.process_time()))
    )
    if len(marks) >= 3:  # steady state: end of update 1 .. end of the update before the last
        (s0, t0, c0), (s1, t1, c1) = marks[0], marks[-2]
        steady, steady_cpu = (s1 - s0) / (t1 - t0), (s1 - s0) / (c1 - c0)
    else:
        steady = steady_cpu = result.agent_steps_per_second
    return {
        "steady": steady,
        "steady_cpu": steady_cpu,
        "overall": result.agent_steps_per_second,
        "steps": result.global_step,
        "updates": len(marks),
        "reward": result.final_mean_reward,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (~1 min on a 2-core CPU)")
    parser.add_argument("--mission", default="training_facility_1")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--num-envs", type=int, default=None, help="DAFTrainingConfig.num_envs (default: config's)")
    parser.add_argument("--steps", type=int, default=None, help="agent-steps per trainer run (default 300k, quick 60k)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for the update (DAFTrainingConfig.torch_threads); default: the trainer's (every core "
        "this process may use)",
    )
    parser.add_argument("--raw-seconds", type=float, default=None, help="seconds per raw measurement")
    parser.add_argument("--policies", default="mlp,lstm")
    parser.add_argument(
        "--env-workers", default="0,1", help="num_env_workers per trainer run, comma-separated; 0 is the reference"
    )
    parser.add_argument("--no-overlap", action="store_true", help="env_overlap false: one block, in-process numbers")
    parser.add_argument(
        "--overlap-update", action="store_true", help="also run each entry with overlap_update (rollout during update)"
    )
    args = parser.parse_args()
    variants = [
        (int(w), lagged)
        for w in args.env_workers.split(",")
        for lagged in ([False, True] if args.overlap_update else [False])
    ]
    steps = args.steps or (60_000 if args.quick else 300_000)
    raw_seconds = args.raw_seconds or (2.0 if args.quick else 5.0)
    policies = args.policies.split(",")

    raw_before = raw_stepping_rate(args.mission, raw_seconds)
    vecenv = vecenv_rate(args.mission, args.num_envs or DAFTrainingConfig().num_envs, raw_seconds)
    rates = {}
    with tempfile.TemporaryDirectory(prefix="daf-bench-") as workdir:
        for policy in policies:
            for workers, lagged in variants:
                rates[policy, workers, lagged] = trainer_rate(
                    policy, args.mission, steps, args.device, args.num_envs, args.threads, workdir, workers,
                    not args.no_overlap, lagged,
                )  # fmt: skip
    raw_after = raw_stepping_rate(args.mission, raw_seconds)
    raw = (raw_before["agent_steps_per_s"] + raw_after["agent_steps_per_s"]) / 2
    raw_cpu = (raw_before["agent_steps_per_cpu_s"] + raw_after["agent_steps_per_cpu_s"]) / 2

    print(
        f"mission {args.mission}, device {args.device}, num_envs {args.num_envs or 'default'}, "
        f"torch threads {args.threads or 'default'}, {steps:,} agent-steps per trainer run"
    )
    print("wall: agent-steps per wall-clock second; CPU: per second of this process's CPU time (what dedicated")
    print("cores would do; the two agree on an idle machine, CPU is the robust one on a shared machine)")
    header = (
        f"{'what':<32} {'wall steps/s':>13} {'vs raw':>7} {'CPU steps/s':>12} {'vs raw':>7} {'target':>7} {'result':>7}"
    )
    print(header)
    print("-" * len(header))
    print(
        f"{'raw stepping (random)':<32} {raw:>13,.0f} {'100%':>7} {raw_cpu:>12,.0f} {'100%':>7}"
        f"   (wall before {raw_before['agent_steps_per_s']:,.0f}, after {raw_after['agent_steps_per_s']:,.0f})"
    )
    print(f"{'DAF VecEnv (random)':<32} {vecenv:>13,.0f} {vecenv / raw:>7.0%}   (the trainer's environment alone)")
    for (policy, workers, lagged), r in rates.items():
        ratio, ratio_cpu = r["steady"] / raw, r["steady_cpu"] / raw_cpu
        target = TARGETS.get(policy)
        # PASS needs the wall ratio; the CPU ratio is shown for shared machines.
        verdict = "" if target is None else ("PASS" if ratio >= target else "MISS")
        target_s = "" if target is None else f">={target:.0%}"
        print(
            f"{f'trainer {policy} {_label(workers, lagged)}':<32} {r['steady']:>13,.0f} {ratio:>7.1%} "
            f"{r['steady_cpu']:>12,.0f} {ratio_cpu:>7.1%} {target_s:>7} {verdict:>7}"
            f"   (overall {r['overall']:,.0f}/s wall; {r['updates']} updates; last reward {r['reward']})"
        )
    print(
        "vs the trainer's own environment (VecEnv alone): "
        + ", ".join(f"{p} {_label(w, lagged)} {r['steady'] / vecenv:.1%}" for (p, w, lagged), r in rates.items())
        + " (targets are set against raw mettagrid stepping, the first row)"
    )
    for policy in policies:
        reference = rates.get((policy, 0, False))
        for workers, lagged in variants:
            if reference is None or (workers, lagged) == (0, False):
                continue
            r = rates[policy, workers, lagged]
            speedup = r["steady"] / reference["steady"]
            verdict = "PASS" if speedup >= WORKER_SPEEDUP_TARGET else "MISS"
            print(
                f"{policy} {_label(workers, lagged)} vs in-process: {speedup:.2f}x wall "
                f"(target >= {WORKER_SPEEDUP_TARGET}x: {verdict}); CPU-time rate "
                f"{r['steady_cpu'] / reference['steady_cpu']:.2f}x (the learner's process only)"
            )


def _label(workers: int, lagged: bool) -> str:
    where = "in-process" if workers == 0 else f"{workers} env worker{'s' if workers > 1 else ''}"
    return where + (" +overlap" if lagged else "")


if __name__ == "__main__":
    main()
