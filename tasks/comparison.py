"""Statistics and the reports as tasks (never retried: they read only their inputs).

Statistics are cached on the content of the evaluations: a resumed pipeline whose evaluations all come from
the cache gets its statistics back too (a third of a cached comparison re-run's time otherwise). The report
is always written: it goes into the new run's own directory.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy

from daf.comparison import compare_evaluations
from daf.evaluation import EvaluationResult
from daf.faults import maybe_fail
from daf.reports import write_report, write_training_report
from daf.stats import ComparisonStatistics
from daf.tasks.common import make_cache_key
from daf.tasks.result_records import DAFJSONSerializer
from daf.training.metrics import read_metrics


def _statistics_key(context, parameters) -> str:
    return make_cache_key(statistics_task.fn, parameters)


@task(
    name="comparison",
    cache_policy=CacheKeyFnPolicy(cache_key_fn=_statistics_key),
    persist_result=True,
    result_serializer=DAFJSONSerializer(),
)
def statistics_task(evaluations: list[dict], alpha: float, correction: str, seed: int) -> dict:
    maybe_fail("comparison")
    results = [EvaluationResult.from_dict(e) for e in evaluations]
    return compare_evaluations(results, alpha=alpha, correction=correction, seed=seed).to_dict()


@task(name="report")
def report_task(
    statistics: dict, metadata: dict, output_dir: str, title: str, training_metrics: dict[str, str] | None = None
) -> dict:
    """`training_metrics`: policy name -> metrics.jsonl of the run that trained it (its learning curve)."""
    maybe_fail("report")
    curves = {name: read_metrics(Path(path)) for name, path in (training_metrics or {}).items()}
    paths = write_report(
        ComparisonStatistics.from_dict(statistics), metadata, output_dir, title=title, training_metrics=curves
    )
    return {
        "html": str(paths.html),
        "json": str(paths.json),
        "markdown": str(paths.markdown),
        "markdown_text": paths.markdown.read_text(),  # the summary just written, not rendered twice
    }


@task(name="report")
def training_report_task(
    training: dict, config: dict, evaluations: list[dict], output_dir: str, flow_run: dict | None = None
) -> str:
    """The training report of a run (daf.reports.training); `training` is its TrainingResult as a dict, `flow_run`
    the flow run it came from."""
    maybe_fail("report")
    metrics = read_metrics(Path(training["metrics_path"]))
    return str(write_training_report(training, metrics, config, evaluations, output_dir, flow_run))
