"""Why overlap_update gains little on a 2-core CPU (issue #19): two measurements behind bench/README.md's figures.

1. GIL: a thread stepping DAF's VecEnv beside a pure-Python loop. If mettagrid released Python's GIL while it
   steps, both together would take about as long as the longer one alone; they take longer than both in turn.
2. Collect vs update: per rollout of the default config (`mlp`, one torch thread), the rollout alone, the PPO
   update alone, and both at once (the rollout in a thread with a copy of the weights, as
   daf.training.collector runs it), in process and with env workers.

    python bench/update_overlap.py [--env-workers 0,1] [--reps 5]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from daf.config import DAFTrainingConfig  # noqa: E402
from daf.training.rollout import RolloutBuffer, compute_gae  # noqa: E402
from daf.training.update import make_optimizer, ppo_update  # noqa: E402
from daf.training.validation import make_policy  # noqa: E402
from daf.vecenv import VecEnv, make_vecenv  # noqa: E402


def gil_check(steps: int = 2000, loop: int = 20_000_000) -> tuple[float, float, float]:
    envs = VecEnv(["training_facility_1"], 16, 0)
    actions = np.zeros(envs.num_rows, dtype=np.int64)

    def step() -> None:
        for _ in range(steps):
            envs.step(actions)

    def python_loop() -> None:
        total = 0
        for i in range(loop):
            total += i

    try:
        started = time.perf_counter()
        step()
        alone_step = time.perf_counter() - started
        started = time.perf_counter()
        python_loop()
        alone_loop = time.perf_counter() - started
        thread = threading.Thread(target=step)
        started = time.perf_counter()
        thread.start()
        python_loop()
        thread.join()
        return alone_step, alone_loop, time.perf_counter() - started
    finally:
        envs.close()


def collect_vs_update(workers: int, reps: int) -> dict[str, float]:
    torch.set_num_threads(1)
    cfg = DAFTrainingConfig(policy_class_path="mlp", progress=False)
    envs = make_vecenv(cfg.missions, cfg.num_envs, 0, workers, True)
    try:
        device = torch.device("cpu")
        policy, _ = make_policy(cfg, envs.env_info, device)
        net = policy.network()
        acting = copy.deepcopy(net)
        optimizer = make_optimizer(net, cfg.learning_rate, device)
        update_rng, acting_rng = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
        first = RolloutBuffer(envs, net, cfg.num_steps, cfg.bptt_horizon, device)
        second = RolloutBuffer(envs, net, cfg.num_steps, cfg.bptt_horizon, device)
        value = first.collect(envs, net, acting_rng)
        advantages, returns = compute_gae(first, value, cfg.gamma, cfg.gae_lambda)
        rollout = first.for_update(advantages, returns)

        def update() -> None:
            ppo_update(cfg, net, optimizer, rollout, update_rng)

        def both() -> None:
            thread = threading.Thread(target=second.collect, args=(envs, acting, acting_rng))
            thread.start()
            update()
            thread.join()

        out = {}
        for name, fn in (
            ("collect", lambda: second.collect(envs, acting, acting_rng)),
            ("update", update),
            ("both", both),
        ):
            started = time.perf_counter()
            for _ in range(reps):
                fn()
            out[name] = (time.perf_counter() - started) / reps
        return out
    finally:
        envs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-workers", default="0,1")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    alone_step, alone_loop, together = gil_check()
    print(
        f"GIL: stepping alone {alone_step:.2f} s, Python loop alone {alone_loop:.2f} s, both at once {together:.2f} s "
        f"(in turn {alone_step + alone_loop:.2f} s; overlapping would be ~{max(alone_step, alone_loop):.2f} s)"
    )
    for workers in (int(w) for w in args.env_workers.split(",")):
        t = collect_vs_update(workers, args.reps)
        where = "in-process" if workers == 0 else f"{workers} env worker(s)"
        in_turn = t["collect"] + t["update"]
        print(
            f"{where}: per rollout collect {t['collect']:.3f} s, update {t['update']:.3f} s, both at once "
            f"{t['both']:.3f} s (in turn {in_turn:.3f} s): {in_turn / t['both']:.2f}x"
        )


if __name__ == "__main__":
    main()
