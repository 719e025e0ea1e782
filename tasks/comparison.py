"""Statistics and the report as tasks (cheap: not cached, never retried)."""

from __future__ import annotations

from prefect import task

from daf.comparison import summarize
from daf.evaluation import EvaluationResult
from daf.faults import maybe_fail
from daf.reports import write_report
from daf.stats import ComparisonStatistics


@task(name="comparison")
def statistics_task(evaluations: list[dict], alpha: float, correction: str, seed: int) -> dict:
    maybe_fail("comparison")
    results = [EvaluationResult.from_dict(e) for e in evaluations]
    return summarize(results, alpha=alpha, correction=correction, seed=seed).to_dict()


@task(name="report")
def report_task(statistics: dict, metadata: dict, output_dir: str, title: str) -> dict:
    maybe_fail("report")
    paths = write_report(ComparisonStatistics.from_dict(statistics), metadata, output_dir, title=title)
    return {
        "html": str(paths.html),
        "json": str(paths.json),
        "markdown": str(paths.markdown),
        "markdown_text": paths.markdown.read_text(),  # the summary just written, not rendered twice
    }
