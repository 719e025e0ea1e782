"""Coverage of DAF's per-mission confidence interval (daf.stats.bootstrap_mean_ci: percentile bootstrap of the
mean) against its nominal level, by episodes per mission, on reward distributions shaped like the missions'
(heart counts: Poisson; skewed: a mix of failed and good episodes; symmetric: normal).

A 95% interval should contain the true mean in 95% of repeated experiments; the percentile bootstrap falls short
with few episodes (it ignores that the spread itself is estimated). The report warns below the smallest n this
bench shows as adequate.

    python bench/ci_coverage.py [--reps 1000] [--n 3 5 10 20 50]
"""

from __future__ import annotations

import argparse

import numpy as np

from daf.stats import StatsConfig, bootstrap_mean_ci

DISTRIBUTIONS = {
    # name: (sampler(rng, n), true mean)
    "poisson(20)": (lambda rng, n: rng.poisson(20.0, n).astype(float), 20.0),
    "skewed (30% zeros, else ~exp(100))": (
        lambda rng, n: np.where(rng.random(n) < 0.3, 0.0, rng.exponential(100.0, n)),
        70.0,
    ),
    "normal(300, 60)": (lambda rng, n: rng.normal(300.0, 60.0, n), 300.0),
}


def coverage(sample, true_mean: float, n: int, reps: int, cfg: StatsConfig, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        lo, hi = bootstrap_mean_ci(sample(rng, n), cfg, rng)
        hits += lo <= true_mean <= hi
    return hits / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--n", type=int, nargs="+", default=[3, 5, 10, 20, 50])
    args = parser.parse_args()
    cfg = StatsConfig()
    print(f"nominal {cfg.confidence_level:.0%}, {cfg.n_resamples} resamples, {args.reps} experiments per cell "
          f"(+-{2 * (0.95 * 0.05 / args.reps) ** 0.5:.3f} at 2 standard errors)")  # fmt: skip
    print(f"{'distribution':<38}" + "".join(f"{f'n={n}':>9}" for n in args.n))
    for name, (sample, mean) in DISTRIBUTIONS.items():
        row = [coverage(sample, mean, n, args.reps, cfg, seed=n) for n in args.n]
        print(f"{name:<38}" + "".join(f"{c:>9.3f}" for c in row))


if __name__ == "__main__":
    main()
