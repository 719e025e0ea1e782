"""Matplotlib figures for the report, returned as base64 PNG strings for data URIs.

Uses the object-oriented API with the Agg canvas directly (no pyplot): no global backend
switch, no figure registry to leak, safe to call from worker threads.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from daf.stats import ComparisonStatistics
from daf.text import printable


def _label(name: str) -> str:
    # '$' would switch matplotlib into mathtext and can raise on user-supplied policy names; control characters
    # have no glyph: shown escaped, as everywhere else (daf.text).
    return printable(name).replace("$", r"\$")


def _to_base64(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _grid(n: int, ncols: int = 3) -> tuple[Figure, list]:
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def mission_means_png(stats: ComparisonStatistics) -> str:
    """Per-mission mean with bootstrap CI error bars, one marker series per policy."""
    n_pol = len(stats.policies)
    fig = Figure(figsize=(max(6.0, 1.4 * len(stats.missions) * max(1, n_pol) ** 0.5), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = np.arange(len(stats.missions))
    width = 0.8 / max(1, n_pol)
    for i, policy in enumerate(stats.policies):
        ms = [stats.mission_stats(policy, m) for m in stats.missions]
        means = np.array([s.mean for s in ms])
        lo = np.array([s.ci_low for s in ms])
        hi = np.array([s.ci_high for s in ms])
        # NaN CI (a single episode) -> no error bar rather than a broken one.
        err = np.nan_to_num(np.vstack([means - lo, hi - means]), nan=0.0)
        ax.errorbar(xs - 0.4 + width * (i + 0.5), means, yerr=err, fmt="o", capsize=4, label=_label(policy))
    ax.set_xticks(xs, [_label(m) for m in stats.missions], rotation=20, ha="right")
    ax.set_ylabel("mean episode reward")
    ax.set_title(f"Per-mission mean with {stats.confidence_level:.0%} bootstrap CI")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return _to_base64(fig)


def distributions_png(stats: ComparisonStatistics) -> str:
    """Box plots of per-episode rewards, one panel per mission."""
    fig, axes = _grid(len(stats.missions))
    for ax, mission in zip(axes, stats.missions, strict=True):
        data = [stats.scores[p][mission] for p in stats.policies]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(stats.policies) + 1), [_label(p) for p in stats.policies], rotation=20, ha="right")
        ax.set_title(_label(mission))
        ax.set_ylabel("episode reward")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Score distributions")
    return _to_base64(fig)


def performance_profiles_png(stats: ComparisonStatistics) -> str:
    """Fraction of episodes with score > tau as a function of tau, one panel per mission."""
    fig, axes = _grid(len(stats.missions))
    for ax, mission in zip(axes, stats.missions, strict=True):
        all_scores = np.concatenate([np.asarray(stats.scores[p][mission], float) for p in stats.policies])
        lo, hi = float(all_scores.min()), float(all_scores.max())
        pad = 0.05 * (hi - lo) if hi > lo else 1.0
        taus = np.linspace(lo - pad, hi + pad, 200)
        for policy in stats.policies:
            x = np.asarray(stats.scores[policy][mission], float)
            ax.plot(taus, (x[None, :] > taus[:, None]).mean(axis=1), label=_label(policy))
        ax.set_title(_label(mission))
        ax.set_xlabel(r"threshold $\tau$")
        ax.set_ylabel(r"fraction of episodes > $\tau$")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle("Performance profiles")
    return _to_base64(fig)


def improvement_matrix_png(stats: ComparisonStatistics) -> str:
    """Heatmap of aggregate P(row policy > column policy)."""
    n = len(stats.policies)
    mat = np.full((n, n), 0.5)
    for i, a in enumerate(stats.policies):
        for j, b in enumerate(stats.policies):
            if i != j:
                mat[i, j] = stats.pair(a, b).prob_improvement
    fig = Figure(figsize=(1.2 * n + 3.0, 1.0 * n + 2.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(mat, vmin=0.0, vmax=1.0, cmap="RdBu")
    labels = [_label(p) for p in stats.policies]
    ax.set_xticks(range(n), labels, rotation=30, ha="right")
    ax.set_yticks(range(n), labels)
    for i in range(n):
        for j in range(n):
            color = "white" if abs(mat[i, j] - 0.5) > 0.3 else "black"  # readable on dark cells
            text = "—" if i == j else f"{mat[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize="small", color=color)
    ax.set_title("P(row > column), averaged over missions")
    fig.colorbar(im, ax=ax)
    return _to_base64(fig)


# What an RL user checks in a training run, as (panel title, metrics.jsonl key): whether the reward rises, and
# whether the update is healthy (losses, entropy collapsing too early, KL and clipping staying small).
LEARNING_CURVE_PANELS = (
    ("mean episode reward", "episode_reward"),
    ("policy loss", "policy_loss"),
    ("value loss", "value_loss"),
    ("entropy", "entropy"),
    ("approx KL", "approx_kl"),
    ("clip fraction", "clipfrac"),
)


def learning_curve_figure(metrics: list[dict], title: str) -> Figure:
    """A training run's per-update records (daf.training.metrics) against agent-steps, one panel per quantity;
    the reward only where an update finished episodes (the log repeats the last mean in between)."""
    fig, axes = _grid(len(LEARNING_CURVE_PANELS))
    for ax, (label, key) in zip(axes, LEARNING_CURVE_PANELS):
        rows = [m for m in metrics if key != "episode_reward" or m.get("episodes", 1)]
        points = [(m["step"], m[key]) for m in rows if m.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker=".", linewidth=1)
        ax.set_title(label)
        ax.set_xlabel("agent-steps")
        ax.grid(alpha=0.3)
    fig.suptitle(_label(title))
    fig.tight_layout()
    return fig


def learning_curve_png(metrics: list[dict], title: str) -> str:
    return _to_base64(learning_curve_figure(metrics, title))


def all_plots(stats: ComparisonStatistics) -> dict[str, str]:
    """Title -> base64 PNG. The P(improvement) matrix needs at least two policies."""
    plots = {
        "Per-mission means": mission_means_png(stats),
        "Score distributions": distributions_png(stats),
        "Performance profiles": performance_profiles_png(stats),
    }
    if len(stats.policies) >= 2:
        plots["P(improvement) matrix"] = improvement_matrix_png(stats)
    return plots
