"""Sweep efficiency: a full grid vs a pruned TPE sweep given half the grid's compute, same per-trial budget.

Both sweeps train `mlp` on one mission with DAF's PPO trainer (daf.sweeps.run_sweep) over learning rate x
entropy coefficient, every trial for the same budget of agent-steps. The grid trains every point to the full
budget without pruning. The TPE sweep searches the log ranges spanning the grid with at most as many trials
as the grid has points and a compute budget (`max_agent_steps`) of half the agent-steps the grid trained: it
starts a trial only while a full trial still fits. The median pruner (DAF's default: no verdict before a
quarter of the budget) stops trials that fall behind at the intermediate evaluations (every eighth of the budget,
`episodes_per_trial` episodes each). Reported per sweep: agent-steps trained (sum over trials, pruned trials
up to where they stopped), the best score with a 95% bootstrap CI over the best trial's evaluation episodes,
and the ratio of steps. Target: the pruned sweep's best lies within (or above) the grid best's CI with <= 50%
of the grid's agent-steps. `--seeds` repeats the comparison with other seeds (samplers, training, evaluation).

    python bench/sweep_efficiency.py [--quick] [--mission M] [--output-dir DIR] [--jobs N] [--pruner P] [--seeds S ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from daf.config import DAFSweepConfig  # noqa: E402
from daf.stats import StatsConfig, bootstrap_mean_ci  # noqa: E402
from daf.sweeps import SweepResult, run_sweep  # noqa: E402

# Two hyperparameters (learning rate x entropy coefficient): the case a grid is run for, and the one where it
# spends most of its budget on settings that are visibly bad early on.
SIZES = {
    "quick": {
        "budget": 98_304,
        "episodes": 6,
        "grid": {"learning_rate": [3e-4, 3e-3, 1e-2], "ent_coef": [0.001, 0.03]},
    },
    "full": {
        "budget": 262_144,
        "episodes": 10,
        "grid": {"learning_rate": [3e-4, 1e-3, 3e-3, 1e-2], "ent_coef": [0.001, 0.01, 0.05]},
    },
}


def sweep_config(
    name: str, size: dict, mission: str, output_dir: str, jobs: int, pruner: str, seed: int, budget: int | None
) -> DAFSweepConfig:
    """The grid when `budget` is None, else the pruned TPE sweep limited to `budget` agent-steps."""
    grid = size["grid"]
    points = int(np.prod([len(values) for values in grid.values()]))
    pruned = budget is not None
    return DAFSweepConfig(
        name=name,
        output_dir=output_dir,
        policy_class_path="mlp",
        missions=[mission],
        # TPE searches the log ranges spanning the grid.
        search_space={k: {"low": min(v), "high": max(v), "log": True} for k, v in grid.items()} if pruned else grid,
        strategy="bayesian" if pruned else "grid",
        # As many trials as the grid at most, and half its compute: whichever runs out first ends the sweep.
        num_trials=points,
        max_agent_steps=budget,
        training_steps_per_trial=size["budget"],
        episodes_per_trial=size["episodes"],
        pruner=pruner,
        # Eight intermediate evaluations per trial: a hopeless trial stops as soon as the pruner may judge it.
        eval_interval_steps=size["budget"] // 8,
        max_parallel_jobs=jobs,
        device="cpu",
        seed=seed,
    )


def summarize(result: SweepResult, wall_s: float) -> dict:
    best = next(t for t in result.trials if t["number"] == result.best_config.trial_number)
    rewards = np.asarray([r for rs in best["episode_rewards"].values() for r in rs], dtype=float)
    ci = bootstrap_mean_ci(rewards, StatsConfig(), np.random.default_rng(0))
    states = [t["state"] for t in result.trials]
    return {
        "trials": len(states),
        "completed": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "agent_steps": sum(t["agent_steps"] or 0 for t in result.trials),
        "best": result.best_config.hyperparameters,
        "best_score": result.best_config.score,
        "ci": ci,
        "wall_s": wall_s,
        # (trial number, agent-steps, value) in trial order: enough to find when a target was first reached.
        "history": sorted((t["number"], t["agent_steps"] or 0, t["value"]) for t in result.trials),
    }


def run(name: str, cfg: DAFSweepConfig) -> dict:
    started = time.perf_counter()
    result = run_sweep(cfg, progress=lambda e: print(f"  {name} trial {e.number}: {e.state} {e.value}"))
    return summarize(result, time.perf_counter() - started)


def print_table(rows: dict[str, dict]) -> dict:
    """Print one seed's comparison; return its verdict."""
    print(
        f"\n{'sweep':<12}{'trials':>7}{'done':>6}{'pruned':>8}{'agent-steps':>13}"
        f"{'best score [95% CI]':>26}{'wall s':>9}  best hyperparameters"
    )
    for name, r in rows.items():
        score = f"{r['best_score']:.1f} [{r['ci'][0]:.1f}, {r['ci'][1]:.1f}]"
        print(
            f"{name:<12}{r['trials']:>7}{r['completed']:>6}{r['pruned']:>8}{r['agent_steps']:>13,}"
            f"{score:>26}{r['wall_s']:>9.0f}  " + ", ".join(f"{k}={v:.3g}" for k, v in r["best"].items())
        )
    grid, tpe = rows["grid"], rows["tpe+pruner"]
    ratio = tpe["agent_steps"] / grid["agent_steps"]
    reached = tpe["best_score"] >= grid["ci"][0]
    # Agent-steps spent until a trial first scored within the grid best's CI.
    spent, first = 0, None
    for _number, steps, value in tpe["history"]:
        spent += steps
        if value is not None and value >= grid["ci"][0]:
            first = spent
            break
    print(f"\nsteps ratio (pruned / grid): {ratio:.2f}")
    print(f"pruned best within or above the grid best's 95% CI: {'yes' if reached else 'no'}")
    if first is not None:
        print(f"first within it after {first:,} agent-steps ({first / grid['agent_steps']:.2f} of the grid's total)")
    met = reached and ratio <= 0.5
    print(f"target (reached with <= 50% of the steps): {'met' if met else 'not met'}")
    return {"ratio": ratio, "reached": reached, "first": first and first / grid["agent_steps"], "met": met}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (~3 min a seed on 2 idle cores)")
    parser.add_argument("--mission", default="training_facility_1")
    parser.add_argument("--output-dir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--jobs", type=int, default=1, help="parallel trials per sweep")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one comparison per seed")
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband"], help="the pruned sweep's pruner")
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    out = args.output_dir or tempfile.mkdtemp(prefix="daf-sweep-bench-")
    results = {}
    for seed in args.seeds:
        print(f"\nmission {args.mission}, seed {seed}, per-trial budget {size['budget']:,} agent-steps, output {out}")
        grid = run("grid", sweep_config(f"grid-s{seed}", size, args.mission, out, args.jobs, "none", seed, None))
        budget = grid["agent_steps"] // 2
        tpe_cfg = sweep_config(f"tpe-s{seed}", size, args.mission, out, args.jobs, args.pruner, seed, budget)
        rows = {"grid": grid, "tpe+pruner": run("tpe", tpe_cfg)}
        results[seed] = {"rows": rows, "verdict": print_table(rows)}
    if len(results) > 1:
        print(f"\n{'seed':>5}{'ratio':>7}{'reached':>9}{'first within CI':>17}  target")
        for seed, r in results.items():
            v = r["verdict"]
            first = "never" if v["first"] is None else f"{v['first']:.2f}"
            reached, met = "yes" if v["reached"] else "no", "met" if v["met"] else "not met"
            print(f"{seed:>5}{v['ratio']:>7.2f}{reached:>9}{first:>17}  {met}")
        print(f"target met at {sum(r['verdict']['met'] for r in results.values())} of {len(results)} seeds")
    with open(os.path.join(out, "sweep_efficiency.json"), "w") as fh:
        json.dump({"size": size, "mission": args.mission, "seeds": results}, fh, indent=2)


if __name__ == "__main__":
    main()
