"""Raw mettagrid stepping rate per DAF mission: random actions, no policy, no learning.

Each mission runs one Simulation at a time on one core: random integer action ids (pre-drawn with numpy)
are written into the simulation's numpy action buffer, `Simulation.step()` is called, and a finished
episode is replaced by a new Simulation on a fresh map (so episode resets are part of the cost, as in
training). The figure is agent-steps per second: the ceiling for anything that trains or evaluates on it.
"per CPU-s" divides by the process's CPU time instead of wall time: on a shared machine it shows what one
dedicated core would do.

    python bench/mettagrid_stepping.py [--quick] [--missions a,b] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from mettagrid.simulator.simulator import Simulation  # noqa: E402

from daf.missions import get_mission, list_missions, with_map_seed  # noqa: E402


def raw_stepping_rate(mission: str, seconds: float = 3.0, seed: int = 0) -> dict[str, float]:
    """Agent-steps/s of Simulation.step with random actions on `mission` (resets included)."""
    cfg = get_mission(mission)
    num_agents = cfg.game.num_agents
    num_actions = len(cfg.game.actions.actions())
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, num_actions, size=(4096, num_agents), dtype=np.int32)
    episode = 0

    def new_sim() -> Simulation:
        nonlocal episode
        episode += 1
        return Simulation(with_map_seed(cfg, seed * 100_003 + episode), seed=seed * 100_003 + episode)

    # warm-up (imports, first map build)
    sim = new_sim()
    for _ in range(50):
        sim._c_sim.actions()[:] = pool[_ % len(pool)]
        sim.step()
        if sim.is_done():
            sim.close()
            sim = new_sim()
    steps = episodes = 0
    cpu_start = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(256):
            actions = sim._c_sim.actions()
            actions[:] = pool[steps % len(pool)]
            sim.step()
            steps += 1
            if sim.is_done():
                sim.close()
                sim = new_sim()
                episodes += 1
        if time.perf_counter() >= deadline:
            break
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    sim.close()
    return {
        "agents": num_agents,
        "steps": steps,
        "episodes": episodes,
        "wall_s": wall,
        "agent_steps_per_s": steps * num_agents / wall,
        # per second of this process's CPU time: what one dedicated core would do (robust on a shared machine)
        "agent_steps_per_cpu_s": steps * num_agents / cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 s per mission instead of 5 s")
    parser.add_argument("--seconds", type=float, default=None, help="measuring time per mission")
    parser.add_argument("--missions", default=None, help="comma-separated mission names (default: all)")
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    missions = args.missions.split(",") if args.missions else list_missions()

    print(f"mettagrid raw stepping (random actions, Simulation.step, resets included), {seconds:g} s per mission")
    header = f"{'mission':<28} {'agents':>6} {'episodes':>9} {'agent-steps/s':>14} {'per CPU-s':>10}"
    print(header)
    print("-" * len(header))
    for mission in missions:
        r = raw_stepping_rate(mission, seconds)
        line = f"{mission:<28} {r['agents']:>6d} {r['episodes']:>9d} {r['agent_steps_per_s']:>14,.0f}"
        print(f"{line} {r['agent_steps_per_cpu_s']:>10,.0f}")


if __name__ == "__main__":
    main()
