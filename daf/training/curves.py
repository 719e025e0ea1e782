"""Learning curves: a run's per-update metrics (daf.training.metrics) drawn as a PNG."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from daf.files import atomic_path


def plot_learning_curve(metrics: list[dict], out: Path, title: str) -> Path:
    """Episode reward and losses against agent-steps, written atomically as a PNG."""
    # A Figure with its own Agg canvas, not pyplot: no global figure registry, no backend switch, safe in threads.
    fig = Figure(figsize=(13, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    steps = [m["step"] for m in metrics]
    series = [
        ("mean episode reward", "episode_reward"),
        ("value loss", "value_loss"),
        ("entropy", "entropy"),
    ]
    for ax, (label, key) in zip(axes, series):
        pts = [(s, m[key]) for s, m in zip(steps, metrics) if m.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker=".", linewidth=1)
        ax.set_title(label)
        ax.set_xlabel("agent-steps")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    return out
