"""The training report: one training run's summary, learning curve, evaluation and configuration, as one
self-contained HTML page (the comparison report's look; the same learning-curve figure the benchmark report shows).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daf.content import daf_source
from daf.files import atomic_write_text
from daf.reports.html import flow_run_link, template_environment
from daf.reports.plots import learning_curve_png
from daf.stats import compare_scores

TRAINING_REPORT_FILE = "training_report.html"


def render_training_html(
    training: dict[str, Any],
    metrics: list[dict],
    config: dict[str, Any],
    evaluations: list[dict],
    flow_run: dict[str, Any] | None = None,
) -> str:
    """`training`: daf.training.TrainingResult as a dict; `metrics`: its run's per-update records; `config`: the
    DAFTrainingConfig as JSON; `evaluations`: the final checkpoint's evaluation results (may be empty); `flow_run`:
    the Prefect flow run it came from ({name, id, url})."""
    # Per-mission means and bootstrap CIs of the evaluation, computed as the comparison report computes them.
    scores = {training["run_id"]: {ev["mission"]: ev["rewards"] for ev in evaluations}}
    evaluation = compare_scores(scores, seed=int(config.get("seed", 0))) if evaluations else None
    return (
        template_environment()
        .get_template("training.html.j2")
        .render(
            title=f"DAF training report: {training['run_id']}",
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            training=training,
            config=config,
            curve=learning_curve_png(metrics, training["run_id"]),
            evaluation=evaluation,
            flow_run=flow_run_link(flow_run),
            daf_source=daf_source(),
        )
    )


def write_training_report(
    training: dict[str, Any],
    metrics: list[dict],
    config: dict[str, Any],
    evaluations: list[dict],
    output_dir: str | Path,
    flow_run: dict[str, Any] | None = None,
) -> Path:
    """Write `<output_dir>/training_report.html` atomically and return its path."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    html = render_training_html(training, metrics, config, evaluations, flow_run)
    return atomic_write_text(out / TRAINING_REPORT_FILE, html)
