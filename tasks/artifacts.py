"""Prefect UI artifacts: results tables, markdown summaries, report links, progress bars."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from daf.reports.html import fmt_ci, fmt_num, md_escape
from daf.results import PipelineResult


def _key(text: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:100] or "daf"


def publish_leaderboard(leaderboard: list[dict[str, Any]], markdown: str, key: str) -> None:
    rows = [
        {
            "rank": e["rank"],
            # The UI renders table cells as Markdown, HTML included: a policy named "<img onerror=...>" would be
            # an element. Escaped, it shows as typed.
            "policy": md_escape(e["policy"]),
            # Rounded as in the report: bootstrap bounds carry float noise (18.390000000000015) past 3 decimals.
            "mean": fmt_num(e["mean"]),
            "95% CI": fmt_ci(e["ci_low"], e["ci_high"]),
            "better than next (corrected)": e["significantly_better_than_next"],
        }
        for e in leaderboard
    ]
    create_table_artifact(rows, key=_key(f"{key}-leaderboard"), description="Aggregate leaderboard")
    create_markdown_artifact(markdown, key=_key(f"{key}-summary"), description="Comparison summary")


def publish_report_link(link: str, key: str) -> None:
    """The HTML report's link in the UI: a signed HTTP(S) URL of the stored report when the run has a result store
    (a page of the UI can open it), else the local file's absolute file:// URI (shown for a browser on the machine
    that ran it; the UI's page cannot follow it)."""
    create_link_artifact(link, link_text=f"HTML report ({link.split('?')[0]})", key=_key(f"{key}-report"))


def publish_pipeline_result(result: PipelineResult) -> None:
    lines = [f"### {result.pipeline_name}: **{result.status}** in {result.total_time_seconds:.1f}s", ""]
    lines += [f"- completed: `{s}`" for s in result.stages_completed]
    lines += [f"- failed: `{s}`" for s in result.stages_failed]
    lines += [f"- error: {md_escape(e)}" for e in result.errors]
    simple = {k: v for k, v in result.outputs.items() if isinstance(v, str | int | float)}
    if stored := result.outputs.get("stored"):
        simple["stored in"] = stored["run"]
    lines += ["", *(f"- {k}: {md_escape(v)}" for k, v in simple.items())]  # paths hold user strings too
    if evaluations := result.outputs.get("evaluation_results"):
        lines += ["", "| policy | mission | episodes | mean reward |", "|---|---|---|---|"]
        lines += [
            f"| {md_escape(e['policy'])} | {md_escape(e['mission'])} | {e['episodes']} | {fmt_num(e['mean_reward'])} |"
            for e in evaluations
        ]
    if best := result.outputs.get("best_config"):
        params = ", ".join(f"{k}={v}" for k, v in best.hyperparameters.items())
        lines += ["", f"- best trial {best.trial_number}: score {fmt_num(best.score)} with {md_escape(params)}"]
    create_markdown_artifact("\n".join(lines), key=_key(f"{result.pipeline_name}-result"))


class ProgressArtifact:
    """A Prefect progress bar updated at most every `every` percent."""

    def __init__(self, description: str, every: float = 5.0):
        self._id = create_progress_artifact(0.0, description=description)
        self._every = every
        self._last = 0.0

    def update(self, done: float, total: float) -> None:
        pct = min(100.0, 100.0 * done / total) if total else 100.0
        if pct - self._last >= self._every or pct >= 100.0:
            update_progress_artifact(self._id, pct)
            self._last = pct
