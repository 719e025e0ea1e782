import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from daf.stats import (
    ComparisonStatistics,
    benjamini_hochberg,
    compare_scores,
    holm,
    iqm,
    prob_improvement,
    stratified_welch_p,
)


def _normal_scores(rng, means: dict[str, float], missions=("m1", "m2"), n=20, sd=1.0):
    return {p: {m: rng.normal(mu, sd, n).tolist() for m in missions} for p, mu in means.items()}


# --- known answers -----------------------------------------------------------------


def test_holm_textbook():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_is_monotone():
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])


def test_benjamini_hochberg_matches_scipy_and_hand_values():
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    rng = np.random.default_rng(3)
    q = rng.uniform(size=17) ** 2
    np.testing.assert_allclose(benjamini_hochberg(q), sps.false_discovery_control(q, method="bh"))


def test_iqm_known_values():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # middle four: 3, 4, 5, 6
    assert iqm([0, 1, 2, 3, 4, 5, 6, 100]) == pytest.approx(3.5)  # outlier trimmed


def test_prob_improvement_hand_computed():
    # X=[1,2,3] vs Y=[2,2,2]: 3 wins, 3 ties, 3 losses -> 3/9 + 0.5 * 3/9 = 0.5
    assert prob_improvement([1, 2, 3], [2, 2, 2]) == pytest.approx(0.5)
    # X=[1,2,3] vs Y=[0,2,2]: wins 1+1+3 = 5, ties 2 -> 5/9 + 1/9 = 2/3
    assert prob_improvement([1, 2, 3], [0, 2, 2]) == pytest.approx(2 / 3)
    res = compare_scores({"X": {"m": [1, 2, 3]}, "Y": {"m": [0, 2, 2]}}, n_resamples=200)
    assert res.pair("X", "Y", "m").prob_improvement == pytest.approx(2 / 3)
    assert res.pair("Y", "X", "m").prob_improvement == pytest.approx(1 / 3)
    row = res.pair("X", "Y", "m")
    assert 0.0 <= row.prob_improvement_ci_low <= row.prob_improvement <= row.prob_improvement_ci_high <= 1.0
    assert row.cliffs_delta == pytest.approx(1 / 3)


def test_welch_and_mwu_match_scipy():
    a = [3.1, 2.4, 5.6, 4.4, 3.9, 4.8, 2.2]
    b = [1.0, 2.5, 1.9, 3.3, 0.7, 2.1]
    res = compare_scores({"A": {"m": a}, "B": {"m": b}}, n_resamples=50)
    row = res.pair("A", "B", "m")
    assert row.p_welch == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert row.p_mwu == pytest.approx(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue, rel=1e-12)
    # With one mission the stratified aggregate test is exactly Welch's test.
    agg = res.pair("A", "B")
    assert agg.p_welch == pytest.approx(row.p_welch, rel=1e-9)
    assert stratified_welch_p([np.array(a)], [np.array(b)]) == pytest.approx(row.p_welch, rel=1e-9)
    # Hedges' g by hand.
    sp = math.sqrt((6 * np.var(a, ddof=1) + 5 * np.var(b, ddof=1)) / 11)
    assert row.hedges_g == pytest.approx((1 - 3 / (4 * 13 - 9)) * (np.mean(a) - np.mean(b)) / sp)


def test_correction_family_is_all_reported_welch_tests():
    rng = np.random.default_rng(0)
    scores = _normal_scores(rng, {"A": 0.0, "B": 0.5, "C": 1.0}, missions=("m1", "m2", "m3"))
    for correction, fn in (("holm", holm), ("bh", benjamini_hochberg)):
        res = compare_scores(scores, correction=correction, n_resamples=20)
        assert len(res.pairwise) == 3 * (3 + 1)
        raw = [r.p_welch for r in res.pairwise]
        np.testing.assert_allclose([r.p_corrected for r in res.pairwise], fn(raw))
        assert all(r.significant == (r.p_corrected <= 0.05) for r in res.pairwise)


def test_per_mission_summary_and_ci():
    x = [1.0, 2.0, 3.0, 4.0, 10.0]
    res = compare_scores({"A": {"m": x}}, n_resamples=500, seed=1)
    s = res.mission_stats("A", "m")
    assert (s.n, s.mean, s.median, s.min, s.max) == (5, 4.0, 3.0, 1.0, 10.0)
    assert s.std == pytest.approx(np.std(x, ddof=1))
    assert s.ci_low < s.mean < s.ci_high
    assert s.ci_low >= 1.0 and s.ci_high <= 10.0
    assert not s.all_zero
    assert res.pairwise == [] and res.leaderboard[0].rank == 1
    # Same seed, same answer.
    again = compare_scores({"A": {"m": x}}, n_resamples=500, seed=1).mission_stats("A", "m")
    assert (again.ci_low, again.ci_high) == (s.ci_low, s.ci_high)


def test_all_zero_rewards_stay_zero_and_are_not_significant():
    res = compare_scores({"A": {"m1": [0] * 10, "m2": [0] * 10}, "B": {"m1": [0] * 10, "m2": [0] * 10}})
    for policy in ("A", "B"):
        for mission in ("m1", "m2"):
            s = res.mission_stats(policy, mission)
            assert (s.mean, s.ci_low, s.ci_high, s.all_zero) == (0.0, 0.0, 0.0, True)
        agg = res.aggregate_for(policy)
        assert (agg.mean, agg.ci_low, agg.ci_high, agg.all_zero) == (0.0, 0.0, 0.0, True)
    for row in res.pairwise:
        assert row.p_welch == 1.0 and row.p_mwu == 1.0 and row.p_corrected == 1.0
        assert not row.significant
        assert row.prob_improvement == 0.5 and row.hedges_g == 0.0
    assert [e.rank for e in res.leaderboard] == [1, 1]


def test_constant_but_different_policies():
    res = compare_scores({"A": {"m": [1.0] * 8}, "B": {"m": [0.0] * 8}}, n_resamples=50)
    assert res.mission_stats("A", "m").ci_low == res.mission_stats("A", "m").ci_high == 1.0
    assert res.mission_stats("B", "m").all_zero
    assert res.pair("A", "B", "m").p_welch == 0.0
    assert [e.policy for e in res.leaderboard] == ["A", "B"]


# --- behaviour under repeated sampling ---------------------------------------------


def test_false_positive_rate_of_identical_policies_is_near_alpha():
    runs, any_sig, agg_sig = 200, 0, 0
    for seed in range(runs):
        rng = np.random.default_rng(1000 + seed)
        res = compare_scores(_normal_scores(rng, {"A": 0.0, "B": 0.0}), n_resamples=10, seed=seed)
        any_sig += any(r.significant for r in res.pairwise)
        agg_sig += res.pair("A", "B").significant
        assert len({e.rank for e in res.leaderboard}) == 1 or res.pair("A", "B").significant
    assert any_sig / runs <= 0.1
    assert agg_sig / runs <= 0.1


def test_clearly_better_policy_is_detected_and_ranked_first():
    detected = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        # The better policy is listed last so ranking cannot come from insertion order.
        res = compare_scores(_normal_scores(rng, {"base": 0.0, "other": 0.0, "better": 2.0}), n_resamples=10)
        assert res.leaderboard[0].policy == "better"
        detected += res.pair("better", "base").significant and res.pair("better", "other").significant
        assert res.leaderboard[0].rank == 1 and res.leaderboard[1].rank == 2
        assert res.leaderboard[0].significantly_better_than_next
    assert detected == 20


# --- leaderboard ------------------------------------------------------------------


def test_nearly_equal_policies_share_a_rank():
    rng = np.random.default_rng(7)
    base = rng.normal(0, 1, 20)
    res = compare_scores({"A": {"m": (base + 0.01).tolist()}, "B": {"m": base.tolist()}}, n_resamples=20)
    assert res.leaderboard[0].policy == "A"
    assert [e.rank for e in res.leaderboard] == [1, 1]
    assert res.leaderboard[0].significantly_better_than_next is False
    assert res.leaderboard[1].significantly_better_than_next is None


def test_groups_merge_when_a_noisy_policy_overlaps_both():
    # B and C are clearly different; the noisy A is not distinguishable from either, so no rank
    # separation is backed by a significant test -> everyone shares rank 1.
    a = [110.0, -90.0, 60.0, -40.0, 30.0, 20.0, -10.0, 0.0]
    b = [5.0, 5.01, 4.99, 5.02, 4.98, 5.0, 5.01, 4.99]
    c = [v - 1.0 for v in b]
    res = compare_scores({"A": {"m": a}, "B": {"m": b}, "C": {"m": c}}, n_resamples=20)
    assert res.pair("B", "C").significant
    assert not res.pair("A", "B").significant and not res.pair("A", "C").significant
    assert [e.rank for e in res.leaderboard] == [1, 1, 1]


def test_different_ranks_always_backed_by_significant_test():
    for seed in range(30):
        rng = np.random.default_rng(seed)
        means = {f"p{i}": float(rng.choice([0.0, 0.3, 1.0, 2.0])) for i in range(4)}
        res = compare_scores(_normal_scores(rng, means, n=10, sd=float(rng.uniform(0.3, 2))), n_resamples=10)
        for i, hi in enumerate(res.leaderboard):
            for lo in res.leaderboard[i + 1 :]:
                if hi.rank != lo.rank:
                    assert res.pair(hi.policy, lo.policy).significant
        for cur, nxt in itertools.pairwise(res.leaderboard):
            # "Better than next" only across a rank boundary (test_better_than_next_agrees_with_shared_ranks).
            separated = res.pair(cur.policy, nxt.policy).significant and cur.rank != nxt.rank
            assert cur.significantly_better_than_next == separated


# --- serialisation ------------------------------------------------------------------


def test_to_dict_is_strict_json_and_round_trips():
    rng = np.random.default_rng(1)
    scores = _normal_scores(rng, {"A": 0.0, "B": 1.0})
    scores["C"] = {"m1": [0.0], "m2": [3.0]}  # n == 1 -> std and CI are NaN -> None
    res = compare_scores(scores, n_resamples=50)
    d = res.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert set(d) >= {
        "policies",
        "missions",
        "scores",
        "per_mission",
        "aggregate",
        "pairwise",
        "leaderboard",
        "alpha",
        "correction",
        "confidence_level",
    }
    c1 = next(m for m in d["per_mission"] if m["policy"] == "C" and m["mission"] == "m1")
    assert c1["std"] is None and c1["ci_low"] is None
    assert type(d["pairwise"][0]["p_welch"]) is float and type(d["pairwise"][0]["significant"]) is bool
    back = ComparisonStatistics.from_dict(json.loads(text))
    assert back.to_dict() == d
    assert math.isnan(back.mission_stats("C", "m1").std)


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "kwargs", "match"),
    [
        ({}, {}, "at least 1 policy"),
        ({"A": {"m1": [1.0], "m2": [1.0]}, "B": {"m1": [1.0]}}, {}, "same missions"),
        ({"A": {"m1": [1.0]}, "B": {"m1": [1.0], "m2": [2.0]}}, {}, "same missions"),
        ({"A": {"m1": []}}, {}, "empty score list"),
        ({"A": {}}, {}, "no missions"),
        ({"A": {"m1": [1.0, float("nan")]}}, {}, "non-finite"),
        ({"A": {"m1": [1.0]}}, {"alpha": 0.0}, "alpha"),
        ({"A": {"m1": [1.0]}}, {"alpha": 1.0}, "alpha"),
        ({"A": {"m1": [1.0]}}, {"alpha": 1.5}, "alpha"),
        ({"A": {"m1": [1.0]}}, {"correction": "bonferroni"}, "unknown correction"),
        ({"A": {"m1": [1.0]}}, {"confidence_level": 1.0}, "confidence_level"),
    ],
)
def test_invalid_input_raises(scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare_scores(scores, **kwargs)


# --- too little data ------------------------------------------------------------------


def test_one_episode_per_policy_is_never_significant_and_has_no_interval():
    res = compare_scores({"a": {"m": [5.0]}, "b": {"m": [1.0]}}, n_resamples=50)
    for mission in ("m", None):
        pair = res.pair("a", "b", mission)
        assert math.isnan(pair.p_welch) and math.isnan(pair.p_corrected) and not pair.significant
    agg = res.aggregate_for("a")
    assert math.isnan(agg.ci_low) and math.isnan(agg.ci_high)  # undefined, not zero-width
    assert [e.rank for e in res.leaderboard] == [1, 1]
    assert res.leaderboard[0].significantly_better_than_next is False


def test_a_mission_with_one_episode_makes_only_the_aggregate_not_estimable():
    rng = np.random.default_rng(0)
    scores = {
        "a": {"m1": rng.normal(10, 1, 20).tolist(), "m2": [3.0]},
        "b": {"m1": rng.normal(0, 1, 20).tolist(), "m2": [1.0]},
    }
    res = compare_scores(scores, n_resamples=50)
    assert res.pair("a", "b", "m1").significant  # estimable where it can be: corrected within the testable ones
    assert math.isnan(res.pair("a", "b").p_corrected)  # the aggregate: not estimable (was p = 1)
    from daf.reports.html import render_markdown_summary

    summary = render_markdown_summary(res)
    assert "not estimable" in summary and "p_adj 1.000" not in summary
    assert "Warning: with 1 episode(s) per mission" in summary


def test_better_than_next_agrees_with_shared_ranks():
    # A and B are separated by the test, but C (mean 0, huge spread) is separated from neither, so all three
    # share a rank: the A row must not say "better than next".
    a = [10.0, 10.1, 9.9, 10.05, 9.95, 10.0, 10.02, 9.98]
    b = [v - 5.0 for v in a]
    c = [120.0, -110.0, 90.0, -95.0, 60.0, -70.0, 15.0, -10.0]
    res = compare_scores({"A": {"m": a}, "B": {"m": b}, "C": {"m": c}}, n_resamples=20)
    assert res.pair("A", "B").significant
    assert [e.rank for e in res.leaderboard] == [1, 1, 1]
    assert not any(e.significantly_better_than_next for e in res.leaderboard)
    from daf.reports.html import render_markdown_summary

    assert "no: same rank (p_adj" in render_markdown_summary(res)
