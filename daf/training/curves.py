"""Learning curves: a run's per-update metrics (daf.training.metrics) drawn as a PNG next to them."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg

from daf.files import atomic_path
from daf.reports.plots import learning_curve_figure


def plot_learning_curve(metrics: list[dict], out: Path, title: str) -> Path:
    """The figure the reports show (daf.reports.plots.learning_curve_figure), written atomically as a PNG."""
    fig = learning_curve_figure(metrics, title)
    FigureCanvasAgg(fig)  # its own Agg canvas, not pyplot: no global figure registry, no backend switch
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    return out
