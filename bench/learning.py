"""Learning: does the default trainer learn the mission ladder, and how fast? (issue #20)

For each mission, policy (`mlp`, `lstm`) and seed, one training run from scratch on that mission with the default
DAFTrainingConfig (plus any `--set` overrides) up to the largest budget; the weights at every budget on the way are
kept (one run gives the whole curve) and evaluated by DAF's own seeded evaluator, next to the scripted `baseline`
and `random` on the same episodes. Printed: one table (trained mean per budget, its 95% CI, per-seed means, the
fraction of `baseline` reached, whether the CI lies above `random`'s), and learning-curve plots (evaluated reward
against agent-steps, one panel per mission, `baseline` and `random` as lines) written to `--out`. With
`--train-mix`, each policy and seed trains once on that weighted mix of missions (a curriculum,
DAFTrainingConfig.mission_weights) and is evaluated on every mission of `--missions`.

The CI is a percentile bootstrap of the mean over every evaluated episode of every seed (daf.stats, 2000
resamples): it measures how well the episodes pin the mean of these runs, not the spread between seeds, which the
per-seed means show (a few seeds cannot give a useful between-seed interval).

    python bench/learning.py [--quick] [--missions a,b] [--policies mlp,lstm] [--budgets 262144,1048576]
        [--seeds 0,1] [--episodes 20] [--train-mix mission:weight,...] [--set key=value ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mettagrid.policy.policy import PolicySpec  # noqa: E402

from daf.config import DAFTrainingConfig  # noqa: E402
from daf.evaluation import evaluate  # noqa: E402
from daf.stats import StatsConfig, bootstrap_mean_ci  # noqa: E402
from daf.training.ppo import train  # noqa: E402

EVAL_SEED = 42  # the seed of the evaluations in issue #20's table
FULL = dict(
    missions="training_facility_1,training_facility_2", budgets="262144,524288,1048576", seeds="0,1", episodes=20
)
QUICK = dict(missions="training_facility_1", budgets="32768,65536", seeds="0", episodes=10)


def train_with_snapshots(config: DAFTrainingConfig, budgets: list[int], out: Path) -> dict[int, str]:
    """Train up to max(budgets); the weights at the first update at or past each budget, by budget."""
    snapshots: dict[int, str] = {}

    def keep(step: int, policy) -> None:
        for budget in budgets:
            if budget not in snapshots and step >= budget:
                path = out / f"{config.run_id}-{budget}.pt"
                policy.save_policy_data(str(path))
                snapshots[budget] = str(path)

    train(config, on_update=keep)
    return snapshots


def ci(rewards: list[float], seed: int) -> tuple[float, float]:
    x = np.asarray(rewards, dtype=float)
    return bootstrap_mean_ci(x, StatsConfig(), np.random.default_rng(seed))


def plot(curves: dict, references: dict, budgets: list[int], out: Path) -> Path:
    missions = list(references)
    fig = Figure(figsize=(6 * len(missions), 4))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(missions)))
    for ax, mission in zip(axes, missions):
        for (m, policy), by_budget in curves.items():
            if m != mission:
                continue
            means = [np.mean(by_budget[b]["rewards"]) for b in budgets]
            lows = [by_budget[b]["ci"][0] for b in budgets]
            highs = [by_budget[b]["ci"][1] for b in budgets]
            ax.plot(budgets, means, marker="o", label=f"{policy} (trained)")
            ax.fill_between(budgets, lows, highs, alpha=0.2)
        for name, style in (("baseline", "--"), ("random", ":")):
            ax.axhline(np.mean(references[mission][name]), linestyle=style, color="grey", label=name)
        ax.set_title(mission)
        ax.set_xlabel("agent-steps")
        ax.set_ylabel(f"mean episode reward (seeded evaluation, seed {EVAL_SEED})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "learning_curves.png"
    fig.savefig(path, dpi=90)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one mission, one seed, small budgets (~1 min)")
    parser.add_argument("--missions")
    parser.add_argument("--policies", default="mlp,lstm")
    parser.add_argument("--budgets", help="agent-step budgets, comma-separated")
    parser.add_argument("--seeds")
    parser.add_argument("--episodes", type=int)
    parser.add_argument(
        "--train-mix",
        help="train on this mix instead (mission:weight,...; DAFTrainingConfig.mission_weights) and evaluate it on "
        "every mission of --missions",
    )
    parser.add_argument("--set", action="append", default=[], help="DAFTrainingConfig override KEY=VALUE (YAML)")
    parser.add_argument("--out", default=None, help="where the plot goes (default: a temporary directory)")
    args = parser.parse_args()
    defaults = QUICK if args.quick else FULL
    missions = (args.missions or defaults["missions"]).split(",")
    policies = args.policies.split(",")
    budgets = sorted(int(b) for b in (args.budgets or defaults["budgets"]).split(","))
    seeds = [int(s) for s in (args.seeds or defaults["seeds"]).split(",")]
    episodes = args.episodes or defaults["episodes"]
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    out = Path(args.out or tempfile.mkdtemp(prefix="daf-learning-"))
    out.mkdir(parents=True, exist_ok=True)

    references = {
        mission: {
            name: evaluate(PolicySpec(class_path=name), mission, episodes, seed=EVAL_SEED).rewards
            for name in ("baseline", "random")
        }
        for mission in missions
    }
    # Each run trains on one mission and is evaluated on it, or with --train-mix on the mix and evaluated on every
    # mission of --missions.
    if args.train_mix:
        mix = [item.partition(":") for item in args.train_mix.split(",")]
        runs = [([m for m, _, _ in mix], [float(w or 1) for _, _, w in mix], missions)]
    else:
        runs = [([mission], None, [mission]) for mission in missions]
    curves: dict[tuple[str, str], dict[int, dict]] = {
        (mission, policy): {b: {"rewards": [], "per_seed": []} for b in budgets}
        for mission in missions
        for policy in policies
    }
    with tempfile.TemporaryDirectory(prefix="daf-learning-runs-") as workdir:
        for train_missions, weights, evaluated in runs:
            for policy in policies:
                for seed in seeds:
                    config = DAFTrainingConfig(
                        **{
                            **overrides,
                            "policy_class_path": policy,
                            "missions": train_missions,
                            "mission_weights": weights,
                            "num_training_steps": budgets[-1],
                            "seed": seed,
                            "checkpoint_dir": workdir,
                            "run_id": f"{'-'.join(train_missions)}-{policy}-{seed}",
                            "checkpoint_interval": 10**12,
                            "progress": False,
                        }
                    )
                    started = time.perf_counter()
                    snapshots = train_with_snapshots(config, budgets, out)
                    elapsed = time.perf_counter() - started
                    print(f"trained {'+'.join(train_missions)} {policy} seed {seed}: {elapsed:.0f} s", flush=True)
                    for mission in evaluated:
                        for budget, weights_file in snapshots.items():
                            spec = PolicySpec(class_path=policy, data_path=weights_file)
                            rewards = evaluate(spec, mission, episodes, seed=EVAL_SEED).rewards
                            curves[mission, policy][budget]["rewards"] += rewards
                            curves[mission, policy][budget]["per_seed"].append(float(np.mean(rewards)))
    for per_budget in curves.values():
        for budget, entry in per_budget.items():
            entry["ci"] = ci(entry["rewards"], budget)

    print()
    mix = f"; trained on the mix {args.train_mix}" if args.train_mix else ""
    print(f"default DAFTrainingConfig{' with ' + str(overrides) if overrides else ''}{mix}; seeds {seeds}; ")
    print(f"{episodes} evaluation episodes per seed and budget (evaluation seed {EVAL_SEED})")
    header = (
        f"{'mission':<22} {'policy':<6} {'agent-steps':>11} {'trained':>8} {'95% CI':>17} {'per seed':>20} "
        f"{'baseline':>8} {'of base':>7} {'random':>7} {'> random':>8}"
    )
    print(header)
    print("-" * len(header))
    for (mission, policy), per_budget in curves.items():
        base, rand = references[mission]["baseline"], references[mission]["random"]
        rand_high = ci(rand, 0)[1]
        for budget in budgets:
            entry = per_budget[budget]
            mean, (low, high) = float(np.mean(entry["rewards"])), entry["ci"]
            seeds_text = ", ".join(f"{m:.1f}" for m in entry["per_seed"])
            print(
                f"{mission:<22} {policy:<6} {budget:>11,} {mean:>8.1f} {f'[{low:.1f}, {high:.1f}]':>17} "
                f"{seeds_text:>20} {np.mean(base):>8.1f} {mean / np.mean(base):>7.0%} {np.mean(rand):>7.1f} "
                f"{'yes' if low > rand_high else 'no':>8}"
            )
    print(f"plot: {plot(curves, references, budgets, out)}")


if __name__ == "__main__":
    main()
