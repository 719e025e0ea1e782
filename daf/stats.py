"""Statistics for comparing policies on per-episode rewards.

Input is ``{policy: {mission: [episode total reward, ...]}}``. The output is a
``ComparisonStatistics`` holding per-mission summaries, per-policy aggregates,
pairwise tests with multiple-comparison correction and a leaderboard whose rank
groups only separate policies where the corrected test is significant.

Kept free of Prefect so it can be used (and tested) on its own. One module of ~600 lines on purpose: it is one
procedure read top to bottom (result types -> estimators -> tests -> bootstrap intervals -> correction ->
leaderboard), and each statistical choice is argued where it is made; split into files, the argument would be
read out of order.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from daf.jsonable import to_jsonable

Correction = Literal["holm", "bh"]
CORRECTIONS: tuple[str, ...] = ("holm", "bh")


@dataclass(frozen=True)
class StatsConfig:
    alpha: float = 0.05
    correction: Correction = "holm"
    confidence_level: float = 0.95
    n_resamples: int = 2000
    seed: int = 0

    def validate(self) -> None:
        if not (0.0 < self.alpha < 1.0):
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"unknown correction {self.correction!r}; expected one of {CORRECTIONS}")
        if not (0.0 < self.confidence_level < 1.0):
            raise ValueError(f"confidence_level must be in (0, 1), got {self.confidence_level!r}")
        if int(self.n_resamples) < 1:
            raise ValueError(f"n_resamples must be >= 1, got {self.n_resamples!r}")


# ---------------------------------------------------------------------------
# Result containers
# ---------------------------------------------------------------------------


@dataclass
class MissionStats:
    policy: str
    mission: str
    n: int
    mean: float
    std: float  # ddof=1; NaN when n == 1
    median: float
    iqm: float
    min: float
    max: float
    ci_low: float
    ci_high: float
    all_zero: bool


@dataclass
class AggregateStats:
    policy: str
    mean: float  # mean of per-mission means (every mission weighs the same)
    iqm: float  # IQM over all episodes pooled
    ci_low: float
    ci_high: float
    n_episodes: int
    all_zero: bool


@dataclass
class PairwiseResult:
    policy_a: str
    policy_b: str
    mission: str | None  # None marks the aggregate (all missions) row
    mean_a: float
    mean_b: float
    mean_difference: float  # mean_a - mean_b
    p_welch: float
    p_mwu: float
    p_corrected: float
    significant: bool
    hedges_g: float
    cliffs_delta: float
    prob_improvement: float  # P(A > B) + 0.5 P(A == B)
    prob_improvement_ci_low: float
    prob_improvement_ci_high: float


@dataclass
class LeaderboardEntry:
    rank: int
    rank_group: int
    policy: str
    mean: float
    ci_low: float
    ci_high: float
    # Corrected aggregate test against the next entry; None for the last entry.
    significantly_better_than_next: bool | None
    p_corrected_vs_next: float | None


@dataclass
class ComparisonStatistics:
    policies: list[str]
    missions: list[str]
    scores: dict[str, dict[str, list[float]]]
    per_mission: list[MissionStats]
    aggregate: list[AggregateStats]
    pairwise: list[PairwiseResult]
    leaderboard: list[LeaderboardEntry]
    alpha: float
    correction: str
    confidence_level: float
    n_resamples: int
    seed: int
    aggregate_test: str = field(
        default="stratified Welch t-test on the mean of per-mission means (Welch-Satterthwaite df)"
    )

    def mission_stats(self, policy: str, mission: str) -> MissionStats:
        for m in self.per_mission:
            if m.policy == policy and m.mission == mission:
                return m
        raise KeyError((policy, mission))

    def aggregate_for(self, policy: str) -> AggregateStats:
        for a in self.aggregate:
            if a.policy == policy:
                return a
        raise KeyError(policy)

    def pair(self, a: str, b: str, mission: str | None = None) -> PairwiseResult:
        """Result for (a, b); flips the orientation if it was stored as (b, a)."""
        for p in self.pairwise:
            if p.mission != mission:
                continue
            if (p.policy_a, p.policy_b) == (a, b):
                return p
            if (p.policy_a, p.policy_b) == (b, a):
                return _flip(p)
        raise KeyError((a, b, mission))

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComparisonStatistics:
        return cls(
            policies=list(data["policies"]),
            missions=list(data["missions"]),
            scores={p: {m: [float(v) for v in vs] for m, vs in ms.items()} for p, ms in data["scores"].items()},
            per_mission=[_load(MissionStats, d) for d in data["per_mission"]],
            aggregate=[_load(AggregateStats, d) for d in data["aggregate"]],
            pairwise=[_load(PairwiseResult, d) for d in data["pairwise"]],
            leaderboard=[_load(LeaderboardEntry, d) for d in data["leaderboard"]],
            alpha=float(data["alpha"]),
            correction=str(data["correction"]),
            confidence_level=float(data["confidence_level"]),
            n_resamples=int(data["n_resamples"]),
            seed=int(data["seed"]),
            aggregate_test=str(data.get("aggregate_test", "")),
        )


def _flip(p: PairwiseResult) -> PairwiseResult:
    return PairwiseResult(
        policy_a=p.policy_b,
        policy_b=p.policy_a,
        mission=p.mission,
        mean_a=p.mean_b,
        mean_b=p.mean_a,
        mean_difference=-p.mean_difference,
        p_welch=p.p_welch,
        p_mwu=p.p_mwu,
        p_corrected=p.p_corrected,
        significant=p.significant,
        hedges_g=-p.hedges_g,
        cliffs_delta=-p.cliffs_delta,
        prob_improvement=1.0 - p.prob_improvement,
        prob_improvement_ci_low=1.0 - p.prob_improvement_ci_high,
        prob_improvement_ci_high=1.0 - p.prob_improvement_ci_low,
    )


def _load(cls: type, data: Mapping[str, Any]) -> Any:
    kwargs = {}
    for f in fields(cls):
        v = data.get(f.name)
        # None in JSON stands for NaN in float fields (see daf.jsonable); keep None for optional fields.
        if v is None and f.type == "float":
            v = math.nan
        kwargs[f.name] = v
    return cls(**kwargs)


# ---------------------------------------------------------------------------
# Small helpers (public)
# ---------------------------------------------------------------------------


def iqm(x: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: mean of the middle 50% (robust to outlier episodes)."""
    return float(sps.trim_mean(np.asarray(x, dtype=float), 0.25))


def holm(pvals: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, controls the family-wise error rate).

    Written by hand because scipy only ships FDR procedures (false_discovery_control).
    """
    p = np.asarray(pvals, dtype=float)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    # Step-down: an adjusted p-value can never be smaller than the one before it.
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m)
    out[order] = adjusted_sorted
    return out


def benjamini_hochberg(pvals: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (controls the false discovery rate)."""
    p = np.asarray(pvals, dtype=float)
    if p.size == 0:
        return p.copy()
    return np.asarray(sps.false_discovery_control(p, method="bh"), dtype=float)


def prob_improvement(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """P(X > Y) + 0.5 * P(X == Y) for independent draws X from x and Y from y."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    return float(np.mean(x[:, None] > y[None, :]) + 0.5 * np.mean(x[:, None] == y[None, :]))


def hedges_g(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Bias-corrected standardised mean difference; 0 for identical constants, NaN if undefined."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    nx, ny = x.size, y.size
    if nx + ny <= 3:
        return math.nan
    diff = float(x.mean() - y.mean())
    pooled_var = ((nx - 1) * _var(x) + (ny - 1) * _var(y)) / (nx + ny - 2)
    if pooled_var == 0.0:
        # Zero spread: no difference is 0; a difference between two constants has no finite effect size.
        return 0.0 if diff == 0.0 else math.nan
    j = 1.0 - 3.0 / (4.0 * (nx + ny) - 9.0)
    return j * diff / math.sqrt(pooled_var)


def _var(x: np.ndarray) -> float:
    return float(np.var(x, ddof=1)) if x.size > 1 else 0.0


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def welch_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Welch t-test p-value via scipy, with the degenerate cases made explicit; NaN (not estimable) when
    either sample has one episode."""
    if x.size < 2 or y.size < 2:
        # No variance estimate: not evidence of a difference, nor of its absence. NaN never counts as significant
        # (see _apply_correction); p = 0 here used to make one lucky episode "significant".
        return math.nan
    if _var(x) == 0.0 and _var(y) == 0.0:
        # Both samples constant (e.g. all-zero rewards): scipy returns NaN for identical constants
        # (0/0) and warns. Identical constants are no evidence of a difference -> p = 1; different
        # constants are a deterministic difference -> p = 0 (what scipy returns too).
        return 1.0 if float(x[0]) == float(y[0]) else 0.0
    return float(sps.ttest_ind(x, y, equal_var=False).pvalue)


def mwu_p(x: np.ndarray, y: np.ndarray) -> float:
    p = float(sps.mannwhitneyu(x, y, alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p


def stratified_welch_p(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> float:
    """Welch test of mean_m(mean(x_m)) - mean_m(mean(y_m)) with missions as strata.

    The aggregate score is the mean of per-mission means, so we test exactly that quantity:
    its variance is sum_m (s2_xm/n_xm + s2_ym/n_ym) / M^2 and the degrees of freedom come from
    Welch-Satterthwaite over all 2M groups. Pooling raw episodes instead would mix missions with
    different reward scales into one variance. With one mission this is exactly Welch's test.
    """
    groups = [np.asarray(g, dtype=float) for g in (*xs, *ys)]
    if any(g.size < 2 for g in groups):
        return math.nan  # a variance cannot be estimated from one episode: not estimable (as in welch_p)
    diff = float(np.mean([x.mean() for x in xs]) - np.mean([y.mean() for y in ys]))
    v = np.array([_var(g) / g.size for g in groups])
    total = float(v.sum())
    if total == 0.0:
        return 1.0 if diff == 0.0 else 0.0  # all constant; same reasoning as welch_p
    df = total**2 / float(np.sum(v**2 / np.array([g.size - 1 for g in groups])))
    t = diff / (math.sqrt(total) / len(xs))
    return float(2.0 * sps.t.sf(abs(t), df))


# ---------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """Generator keyed on (seed, names) so a policy's CI does not change when other policies are added."""
    return np.random.default_rng([int(seed), *(zlib.crc32(k.encode()) for k in keys)])


def _percentile_ci(samples: np.ndarray, confidence_level: float) -> tuple[float, float]:
    tail = (1.0 - confidence_level) / 2.0 * 100.0
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_mean_ci(x: np.ndarray, cfg: StatsConfig, rng: np.random.Generator) -> tuple[float, float]:
    if x.size < 2:
        return math.nan, math.nan  # one episode says nothing about the spread
    if np.all(x == x[0]):
        # Constant data (common: all-zero rewards). Every resample has the same mean, so the CI is
        # exactly [v, v]; BCa would divide by zero in its acceleration term and return NaN.
        return float(x[0]), float(x[0])
    # Percentile method: robust on the small, tie-heavy samples RL episodes give (BCa can return
    # NaN there) and consistent with the hand-written stratified bootstrap below.
    res = sps.bootstrap(
        (x,),
        np.mean,
        n_resamples=cfg.n_resamples,
        confidence_level=cfg.confidence_level,
        method="percentile",
        vectorized=True,
        rng=rng,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _resampled_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    return x[idx].mean(axis=1)


def _resampled_prob_improvement(x: np.ndarray, y: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of P(X > Y) + 0.5 P(X == Y), resampling x and y independently.

    A replicate is a count per original episode (how often the resample drew it): with K[i, j] = [x_i > y_j] +
    [x_i == y_j] / 2, its Mann-Whitney U is wx' K wy, so all replicates are one matrix product. Exact (counts and
    halves add without rounding) and ~10x faster than ranking every replicate, which dominated a comparison's
    statistics stage.
    """
    wx = _resample_counts(x.size, n_resamples, rng)
    wy = _resample_counts(y.size, n_resamples, rng)
    k = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    return ((wx @ k) * wy).sum(axis=1) / (x.size * y.size)


def _resample_counts(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n): how many times each of n items is drawn by each resample of size n."""
    idx = rng.integers(0, n, size=(n_resamples, n)) + n * np.arange(n_resamples)[:, None]
    return np.bincount(idx.ravel(), minlength=n_resamples * n).reshape(n_resamples, n).astype(float)


# ---------------------------------------------------------------------------
# Main entry point
# ---------------------------------------------------------------------------


def _validate_scores(scores: Mapping[str, Mapping[str, Sequence[float]]]) -> tuple[list[str], list[str]]:
    if not isinstance(scores, Mapping) or len(scores) < 1:
        raise ValueError("scores must contain at least 1 policy")
    policies = [str(p) for p in scores]
    first = policies[0]
    missions = [str(m) for m in scores[first]]
    if not missions:
        raise ValueError(f"policy {first!r} has no missions")
    for policy, per_mission in scores.items():
        missing = [m for m in missions if m not in per_mission]
        extra = [m for m in per_mission if m not in missions]
        if missing or extra:
            raise ValueError(
                f"policy {policy!r} does not have the same missions as {first!r}: missing {missing}, unexpected {extra}"
            )
        for mission in missions:
            values = np.asarray(per_mission[mission], dtype=float)
            if values.ndim != 1 or values.size == 0:
                raise ValueError(f"empty score list for policy {policy!r}, mission {mission!r}")
            if not np.all(np.isfinite(values)):
                raise ValueError(f"non-finite score for policy {policy!r}, mission {mission!r}")
    return policies, missions


def compare_scores(
    scores: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    alpha: float = 0.05,
    correction: Correction = "holm",
    confidence_level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> ComparisonStatistics:
    """Compare policies on per-episode rewards; see the module docstring."""
    cfg = StatsConfig(alpha, correction, confidence_level, int(n_resamples), int(seed))
    cfg.validate()
    policies, missions = _validate_scores(scores)
    data = {p: {m: np.asarray(scores[p][m], dtype=float) for m in missions} for p in policies}

    per_mission = [_mission_stats(p, m, data[p][m], cfg) for p in policies for m in missions]
    aggregate = [_aggregate_stats(p, data[p], cfg) for p in policies]
    pairwise = [r for a, b in itertools.combinations(policies, 2) for r in _pair_rows(a, b, data, missions, cfg)]
    _apply_correction(pairwise, cfg)
    result = ComparisonStatistics(
        policies=policies,
        missions=missions,
        scores={p: {m: data[p][m].tolist() for m in missions} for p in policies},
        per_mission=per_mission,
        aggregate=aggregate,
        pairwise=pairwise,
        leaderboard=[],
        alpha=cfg.alpha,
        correction=cfg.correction,
        confidence_level=cfg.confidence_level,
        n_resamples=cfg.n_resamples,
        seed=cfg.seed,
    )
    result.leaderboard = build_leaderboard(result)
    return result


def _mission_stats(policy: str, mission: str, x: np.ndarray, cfg: StatsConfig) -> MissionStats:
    lo, hi = bootstrap_mean_ci(x, cfg, _rng(cfg.seed, "mission", policy, mission))
    return MissionStats(
        policy=policy,
        mission=mission,
        n=int(x.size),
        mean=float(x.mean()),
        std=float(np.std(x, ddof=1)) if x.size > 1 else math.nan,
        median=float(np.median(x)),
        iqm=iqm(x),
        min=float(x.min()),
        max=float(x.max()),
        ci_low=lo,
        ci_high=hi,
        all_zero=bool(np.all(x == 0.0)),
    )


def _aggregate_stats(policy: str, per_mission: dict[str, np.ndarray], cfg: StatsConfig) -> AggregateStats:
    # Stratified bootstrap: episodes are resampled within each mission independently, then the
    # per-mission means are averaged. This keeps every mission's weight fixed, like the estimate
    # itself; scipy.stats.bootstrap resamples one pooled sample and cannot stratify.
    rng = _rng(cfg.seed, "aggregate", policy)
    arrays = list(per_mission.values())
    boot = np.mean([_resampled_means(x, cfg.n_resamples, rng) for x in arrays], axis=0)
    pooled = np.concatenate(arrays)
    lo, hi = _percentile_ci(boot, cfg.confidence_level)
    if any(x.size < 2 for x in arrays):
        lo, hi = math.nan, math.nan  # a mission with one episode has no spread to resample (as bootstrap_mean_ci)
    return AggregateStats(
        policy=policy,
        mean=float(np.mean([x.mean() for x in arrays])),
        iqm=iqm(pooled),
        ci_low=lo,
        ci_high=hi,
        n_episodes=int(pooled.size),
        all_zero=bool(np.all(pooled == 0.0)),
    )


def _pair_rows(
    a: str, b: str, data: dict[str, dict[str, np.ndarray]], missions: list[str], cfg: StatsConfig
) -> list[PairwiseResult]:
    rows: list[PairwiseResult] = []
    boots: list[np.ndarray] = []
    for m in missions:
        x, y = data[a][m], data[b][m]
        boot = _resampled_prob_improvement(x, y, cfg.n_resamples, _rng(cfg.seed, "pi", a, b, m))
        boots.append(boot)
        pi = prob_improvement(x, y)
        lo, hi = _percentile_ci(boot, cfg.confidence_level)
        rows.append(_row(a, b, m, x.mean(), y.mean(), welch_p(x, y), mwu_p(x, y), hedges_g(x, y), pi, lo, hi))

    # Aggregate row. Tested quantity = difference of the aggregate scores (mean of per-mission
    # means) via the stratified Welch test; that p-value enters the correction family. P(improvement)
    # is averaged over missions (as in rliable), its CI from the same per-mission bootstrap
    # replicates averaged replicate-wise (stratified). Hedges' g is averaged over missions. MWU on
    # pooled episodes is reported for information: under H0 (same distribution per mission, same
    # episodes per mission) pooled samples are exchangeable, but it is not what is corrected.
    xs = [data[a][m] for m in missions]
    ys = [data[b][m] for m in missions]
    pi_agg = float(np.mean([r.prob_improvement for r in rows]))
    lo, hi = _percentile_ci(np.mean(boots, axis=0), cfg.confidence_level)
    rows.append(
        _row(
            a,
            b,
            None,
            np.mean([x.mean() for x in xs]),
            np.mean([y.mean() for y in ys]),
            stratified_welch_p(xs, ys),
            mwu_p(np.concatenate(xs), np.concatenate(ys)),
            float(np.mean([r.hedges_g for r in rows])),
            pi_agg,
            lo,
            hi,
        )
    )
    return rows


def _row(
    a: str,
    b: str,
    mission: str | None,
    mean_a: float,
    mean_b: float,
    p_welch: float,
    p_mwu: float,
    g: float,
    pi: float,
    pi_lo: float,
    pi_hi: float,
) -> PairwiseResult:
    return PairwiseResult(
        policy_a=a,
        policy_b=b,
        mission=mission,
        mean_a=float(mean_a),
        mean_b=float(mean_b),
        mean_difference=float(mean_a - mean_b),
        p_welch=float(p_welch),
        p_mwu=float(p_mwu),
        p_corrected=math.nan,  # filled in by _apply_correction
        significant=False,
        hedges_g=float(g),
        cliffs_delta=2.0 * pi - 1.0,  # Cliff's delta = P(X>Y) - P(X<Y) = 2*P(improvement) - 1
        prob_improvement=float(pi),
        prob_improvement_ci_low=pi_lo,
        prob_improvement_ci_high=pi_hi,
    )


def _apply_correction(rows: list[PairwiseResult], cfg: StatsConfig) -> None:
    # The family is every test reported (all pairs x (missions + aggregate)), using Welch p-values,
    # so no reported "significant" escapes the correction.
    # Tests that cannot be estimated (NaN: one episode) are left out of the family and are never significant.
    raw = np.array([r.p_welch for r in rows], dtype=float)
    testable = ~np.isnan(raw)
    adjusted = np.full(raw.shape, math.nan)
    adjusted[testable] = (holm if cfg.correction == "holm" else benjamini_hochberg)(raw[testable])
    for r, p in zip(rows, adjusted, strict=True):
        r.p_corrected = float(p)
        r.significant = bool(p <= cfg.alpha)  # False for NaN


def build_leaderboard(result: ComparisonStatistics) -> list[LeaderboardEntry]:
    """Rank by aggregate mean; policies share a rank unless the corrected tests separate them.

    Groups are contiguous in the sorted order. A policy opens a new group only if its corrected
    aggregate test is significant against every policy above it; otherwise it is merged into the
    earliest group holding a policy it is not significantly different from (merging everything in
    between). Hence any two policies with different ranks differ significantly after correction.
    """
    order = sorted(result.aggregate, key=lambda s: (-s.mean, s.policy))
    names = [s.policy for s in order]

    def sig(a: str, b: str) -> bool:
        return result.pair(a, b).significant

    groups: list[list[str]] = []
    for name in names:
        hit = next((i for i, g in enumerate(groups) if any(not sig(name, other) for other in g)), None)
        if hit is None:
            groups.append([name])
        else:
            groups[hit:] = [[n for g in groups[hit:] for n in g] + [name]]

    entries: list[LeaderboardEntry] = []
    seen = 0
    for gi, group in enumerate(groups):
        for name in group:
            s = result.aggregate_for(name)
            entries.append(LeaderboardEntry(seen + 1, gi + 1, name, s.mean, s.ci_low, s.ci_high, None, None))
        seen += len(group)
    for cur, nxt in itertools.pairwise(entries):
        pr = result.pair(cur.policy, nxt.policy)
        # A shared rank means "not separated": even a significant pair test does not make the row say "better".
        cur.significantly_better_than_next = bool(pr.significant and cur.mean > nxt.mean and cur.rank != nxt.rank)
        cur.p_corrected_vs_next = pr.p_corrected
    return entries
