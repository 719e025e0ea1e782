"""The sweep's plots, written as PNGs into the sweep directory: optimization_history, parallel_coordinates and
param_importances, drawn from the study's trials and Optuna's parameter importances.

Figures get their own Agg canvas instead of going through pyplot (as optuna.visualization.matplotlib does): no
global figure registry or backend, so plotting is safe in the threads Prefect runs tasks in.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from optuna.distributions import CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from daf.files import atomic_path


def write_plots(study: optuna.Study, out: Path) -> tuple[dict[str, str], list[str]]:
    """{name: path} of the plots written, and a note for each plot skipped and why."""
    makers: dict[str, Callable[[optuna.Study], Figure]] = {
        "optimization_history": _optimization_history,
        "parallel_coordinates": _parallel_coordinates,
        "param_importances": _param_importances,
    }
    notes = []
    note = _importances_note(study)
    if note:
        notes.append(note)
        del makers["param_importances"]
    plots = {}
    for name, make in makers.items():
        path = out / f"{name}.png"
        try:
            figure = make(study)
            with atomic_path(path) as tmp:
                figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        except Exception as exc:  # a plot is a convenience: its failure must not lose the sweep's results
            notes.append(f"{name} skipped: {type(exc).__name__}: {exc}")
            continue
        plots[name] = str(path)
    return plots, notes


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _importances_note(study: optuna.Study) -> str | None:
    complete = _completed(study)
    if len(complete) < 2:
        return "param_importances skipped: needs at least 2 completed trials"
    if not any(len({repr(t.params.get(name)) for t in complete}) > 1 for name in complete[0].params):
        return "param_importances skipped: no parameter took more than one value among completed trials"
    return None


def _figure(width: float = 6.4) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, 4.8))
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def _optimization_history(study: optuna.Study) -> Figure:
    trials = _completed(study)
    values = np.array([t.value for t in trials])
    best_so_far = np.maximum if study.direction == StudyDirection.MAXIMIZE else np.minimum
    figure, ax = _figure()
    numbers = [t.number for t in trials]
    ax.scatter(numbers, values, color="tab:blue", label="Objective Value")
    ax.plot(numbers, best_so_far.accumulate(values), color="tab:red", label="Best Value")
    ax.set_title("Optimization History Plot")
    ax.set_xlabel("Trial")
    ax.set_ylabel("Objective Value")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


Axis = tuple[np.ndarray, list[tuple[float, str]]]  # every trial's height on the axis in [0, 1]; labelled ticks


def _parallel_coordinates(study: optuna.Study) -> Figure:
    """One vertical axis for the objective value and one per parameter; a line per completed trial, coloured by
    its value (darker is better)."""
    completed = _completed(study)
    names = sorted({name for t in completed for name in t.params})
    trials = [t for t in completed if all(name in t.params for name in names)]
    values = np.array([t.value for t in trials])
    axes = [_numeric_axis(values, values), *(_param_axis(trials, name) for name in names)]
    figure, ax = _figure(width=max(6.4, 1.8 * len(axes)))
    points = np.stack([heights for heights, _ in axes], axis=1)  # trials x axes, each axis scaled to [0, 1]
    cmap = colormaps["Blues" if study.direction == StudyDirection.MAXIMIZE else "Blues_r"]
    lines = LineCollection([list(zip(range(len(axes)), row)) for row in points], cmap=cmap)
    lines.set_array(values)
    ax.add_collection(lines)
    for x, (_, ticks) in enumerate(axes):
        ax.axvline(x, color="black", linewidth=1)
        for height, label in ticks:
            ax.text(x + 0.03, height, label, fontsize="small", va="center")
    ax.set_xticks(range(len(axes)), ["Objective Value", *names], rotation=20, ha="right")
    ax.set_xlim(-0.2, len(axes) - 0.6)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    for side in ("left", "right", "top", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title("Parallel Coordinate Plot", y=1.03)
    figure.colorbar(lines, ax=ax, pad=0.1).set_label("Objective Value")
    return figure


def _scaled(positions: np.ndarray, low: float, high: float) -> np.ndarray:
    # A constant axis (one value, one choice) sits in the middle rather than dividing by zero.
    return (positions - low) / (high - low) if high > low else np.full(len(positions), 0.5)


def _param_axis(trials: list[FrozenTrial], name: str) -> Axis:
    distribution = trials[0].distributions[name]
    values = [t.params[name] for t in trials]
    if isinstance(distribution, CategoricalDistribution):
        # Every choice gets its place, also those no completed trial took.
        choices = list(distribution.choices)
        heights = _scaled(np.arange(len(choices), dtype=float), 0, len(choices) - 1)
        return heights[[choices.index(v) for v in values]], [(float(h), str(c)) for h, c in zip(heights, choices)]
    positions = np.log10(values) if distribution.log else np.array(values, dtype=float)
    return _numeric_axis(positions, values)


def _numeric_axis(positions: np.ndarray, values: np.ndarray | list[float]) -> Axis:
    """`positions` (the values, or their logarithms) scaled to the axis, ticks at its ends labelled with the values."""
    low, high = positions.min(), positions.max()
    ticks = [(0.0, f"{min(values):.3g}"), (1.0, f"{max(values):.3g}")] if high > low else [(0.5, f"{min(values):.3g}")]
    return _scaled(positions, low, high), ticks


def _param_importances(study: optuna.Study) -> Figure:
    with warnings.catch_warnings():
        # PED-ANOVA warns that a sweep-sized study has too few trials for distinct quantiles: noise here.
        warnings.simplefilter("ignore")
        importances = optuna.importance.get_param_importances(study)
    names = list(reversed(importances))  # the most important on top
    shares = [importances[name] for name in names]
    figure, ax = _figure()
    bars = ax.barh(names, shares, color="tab:blue")
    ax.bar_label(bars, labels=[f"{share:.2f}" for share in shares], padding=3, fontsize="small")
    ax.set_xlim(0, 1.15 * max(shares))
    ax.set_title("Hyperparameter Importances", loc="left")
    ax.set_xlabel("Hyperparameter Importance")
    ax.set_ylabel("Hyperparameter")
    return figure
