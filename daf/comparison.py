"""Comparing policies: unique display names, evaluation of every (policy, mission), statistics and report."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mettagrid.policy.policy import PolicySpec

from daf.config import PolicyEntry
from daf.content import installed_versions
from daf.evaluation import EvaluationResult, evaluate
from daf.reports import ReportPaths, write_report
from daf.stats import ComparisonStatistics, compare_scores


class ComparisonError(ValueError):
    pass


def as_entry(policy: PolicyEntry | PolicySpec | str | dict) -> PolicyEntry:
    """Accept DAF entries, mettagrid PolicySpecs, short names or dicts."""
    if isinstance(policy, PolicyEntry):
        return policy
    if isinstance(policy, str):
        return PolicyEntry(class_path=policy)
    if isinstance(policy, PolicySpec):
        return PolicyEntry(class_path=policy.class_path, data_path=policy.data_path, init_kwargs=policy.init_kwargs)
    return PolicyEntry.model_validate(policy)


def display_names(entries: Iterable[PolicyEntry]) -> list[str]:
    """A unique name per policy: its given name, else class + checkpoint; repeats get #2, #3."""
    entries = list(entries)
    explicit = [e.name for e in entries if e.name]
    dupes = sorted({n for n in explicit if explicit.count(n) > 1})
    if dupes:
        raise ComparisonError(f"duplicate policy names: {', '.join(dupes)}; give each policy a unique `name`")
    names: list[str] = []
    for entry in entries:
        base = entry.name or PolicySpec(class_path=entry.class_path, data_path=entry.data_path).name
        name, k = base, 1
        while name in names or (name != entry.name and name in explicit):
            k += 1
            name = f"{base}#{k}"
        names.append(name)
    return names


def to_spec(entry: PolicyEntry) -> PolicySpec:
    return PolicySpec(class_path=entry.class_path, data_path=entry.data_path, init_kwargs=entry.init_kwargs)


@dataclass
class ComparisonResult:
    statistics: ComparisonStatistics
    evaluations: list[EvaluationResult]
    report: ReportPaths | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def summary_statistics(self) -> dict[str, Any]:
        return summary_statistics(self.statistics.to_dict())


def summary_statistics(statistics: dict[str, Any]) -> dict[str, Any]:
    """Aggregate and per-mission statistics plus the leaderboard (the seed's `summary_statistics`)."""
    return {k: statistics[k] for k in ("aggregate", "per_mission", "leaderboard", "alpha", "correction")}


def report_metadata(
    entries: list[PolicyEntry], names: list[str], missions: list[str], episodes: int, seed: int
) -> dict[str, Any]:
    return {
        "policies": [{"name": n, "class_path": e.class_path, "data_path": e.data_path} for e, n in zip(entries, names)],
        "missions": missions,
        "episodes_per_mission": episodes,
        "seed": seed,
        "versions": installed_versions(("mettagrid", "torch", "prefect")),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def summarize(
    evaluations: list[EvaluationResult],
    *,
    alpha: float = 0.05,
    correction: str = "holm",
    seed: int = 0,
) -> ComparisonStatistics:
    """Statistics over evaluations keyed by policy display name and mission."""
    scores: dict[str, dict[str, list[float]]] = {}
    for ev in evaluations:
        scores.setdefault(ev.policy_name, {})[ev.mission] = ev.rewards
    return compare_scores(scores, alpha=alpha, correction=correction, seed=seed)


def compare(
    policies: list[PolicyEntry | PolicySpec | str],
    missions: list[str],
    episodes_per_mission: int,
    *,
    seed: int = 42,
    alpha: float = 0.05,
    correction: str = "holm",
    output_dir: str | Path | None = None,
    device: str = "cpu",
    title: str = "DAF comparison report",
    progress: Callable[[str, int, int], None] | None = None,
) -> ComparisonResult:
    """Evaluate every policy on every mission (each on its own) and compare them; writes a report if asked."""
    entries = [as_entry(p) for p in policies]
    names = display_names(entries)
    evaluations = []
    for entry, name in zip(entries, names):
        for mission in missions:
            evaluations.append(
                evaluate(to_spec(entry), mission, episodes_per_mission, seed, policy_name=name, device=device)
            )
            if progress:
                progress(name, len(evaluations), len(entries) * len(missions))
    statistics = summarize(evaluations, alpha=alpha, correction=correction, seed=seed)
    metadata = report_metadata(entries, names, missions, episodes_per_mission, seed)
    report = write_report(statistics, metadata, output_dir, title=title) if output_dir is not None else None
    return ComparisonResult(statistics, evaluations, report, metadata)


__all__ = [
    "ComparisonError",
    "ComparisonResult",
    "as_entry",
    "compare",
    "display_names",
    "summarize",
    "summary_statistics",
    "to_spec",
]
