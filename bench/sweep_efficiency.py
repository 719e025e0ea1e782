"""Sweep efficiency: a full grid vs a pruned TPE sweep over the same hyperparameters, same per-trial budget.

Both sweeps train `mlp` on one mission with DAF's PPO trainer (daf.sweeps.run_sweep) over learning rate x
entropy coefficient. The grid trains every point to the full budget without pruning. The TPE sweep searches
the log ranges spanning the grid with as many trials as the grid has points; the median pruner (DAF's
default: no verdict before a quarter of the budget) stops trials that fall behind at the intermediate
evaluations (every eighth of the budget, `episodes_per_trial` episodes each). Reported per sweep: agent-steps
trained (sum over trials, pruned trials up to where they stopped), the best score with a 95% bootstrap CI
over the best trial's evaluation episodes, and the ratio of steps. Target: the pruned sweep's best lies
within (or above) the grid best's CI with <= 50% of the grid's agent-steps.

    python bench/sweep_efficiency.py [--quick] [--mission M] [--output-dir DIR] [--jobs N] [--pruner P] [--seed S]
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
    name: str, size: dict, mission: str, output_dir: str, jobs: int, pruned: bool, pruner: str, seed: int
) -> DAFSweepConfig:
    grid = size["grid"]
    trials = int(np.prod([len(values) for values in grid.values()]))
    if pruned:  # the log ranges spanning the grid, searched with as many trials as the grid has points
        space = {name: {"low": min(v), "high": max(v), "log": True} for name, v in grid.items()}
    else:
        space = grid
    return DAFSweepConfig(
        name=name,
        output_dir=output_dir,
        policy_class_path="mlp",
        missions=[mission],
        search_space=space,
        strategy="bayesian" if pruned else "grid",
        num_trials=trials,
        training_steps_per_trial=size["budget"],
        episodes_per_trial=size["episodes"],
        pruner=pruner if pruned else "none",
        # Eight intermediate evaluations per trial: a hopeless trial stops after an eighth of its budget.
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
    result = run_sweep(cfg, progress=lambda e: print(f"  {name} trial {e['number']}: {e['state']} {e['value']}"))
    return summarize(result, time.perf_counter() - started)


def print_table(rows: dict[str, dict]) -> None:
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
    print(f"\nsteps ratio (pruned / grid): {ratio:.2f}")
    print(f"pruned best within or above the grid best's 95% CI: {'yes' if reached else 'no'}")
    print(f"target (reached with <= 50% of the steps): {'met' if reached and ratio <= 0.5 else 'not met'}")
    # A second reading of the same run: agent-steps spent until a trial first scored within the grid best's CI.
    spent, first = 0, None
    for _number, steps, value in tpe["history"]:
        spent += steps
        if value is not None and value >= grid["ci"][0]:
            first = spent
            break
    if first is None:
        print("pruned sweep never scored within the grid best's CI")
    else:
        print(f"agent-steps until the pruned sweep first scored within the grid best's CI: {first:,} "
              f"({first / grid['agent_steps']:.2f} of the grid's total)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (~2-3 min on 2 idle cores)")
    parser.add_argument("--mission", default="training_facility_1")
    parser.add_argument("--output-dir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--jobs", type=int, default=1, help="parallel trials per sweep")
    parser.add_argument("--seed", type=int, default=0, help="sweep seed (samplers, training, evaluation)")
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband"], help="the pruned sweep's pruner")
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    out = args.output_dir or tempfile.mkdtemp(prefix="daf-sweep-bench-")
    print(f"mission {args.mission}, seed {args.seed}, per-trial budget {size['budget']:,} agent-steps, output {out}")
    rows = {
        "grid": run("grid", sweep_config("grid", size, args.mission, out, args.jobs, False, "none", args.seed)),
        "tpe+pruner": run("tpe", sweep_config("tpe", size, args.mission, out, args.jobs, True, args.pruner, args.seed)),
    }
    print_table(rows)
    with open(os.path.join(out, "sweep_efficiency.json"), "w") as fh:
        json.dump({"size": size, "mission": args.mission, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
