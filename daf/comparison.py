"""Comparing policies: what the comparison, benchmark and sweep pipelines share about the policies they compare
(unique display names, the statistics over their evaluations, the report's metadata, the best of them)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from mettagrid.policy.policy import PolicySpec

from daf.config import PolicyEntry
from daf.content import daf_source, installed_versions
from daf.errors import InputError
from daf.evaluation import EvaluationResult
from daf.stats import ComparisonStatistics, compare_scores


class ComparisonError(InputError, ValueError):
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
        "daf_source": daf_source(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def compare_evaluations(
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


def evaluation_results(evaluations: list[dict]) -> list[dict]:
    """Per (policy, mission): episodes, mean reward, per-episode rewards and throughput (a pipeline's
    `evaluation_results` output; the per-episode details stay in the evaluations)."""
    out = []
    for ev in evaluations:
        rewards = ev["rewards"]
        out.append(
            {
                "policy": ev["policy_name"],
                "mission": ev["mission"],
                "episodes": len(rewards),
                "mean_reward": sum(rewards) / len(rewards),
                "rewards": rewards,
                "agent_steps_per_second": ev["agent_steps"] / ev["wall_time_s"] if ev["wall_time_s"] else None,
                "invalid_actions": ev.get("invalid_actions", 0),
            }
        )
    return out


def invalid_actions(evaluations: list[dict]) -> dict[str, dict[str, int]]:
    """{policy: {mission: actions that were no action of the mission}}, for the policies that chose any: mettagrid
    steps on without them, so such a policy's rewards do not measure a working policy (the report says so)."""
    found: dict[str, dict[str, int]] = {}
    for ev in evaluations:
        if ev.get("invalid_actions"):
            found.setdefault(ev["policy_name"], {})[ev["mission"]] = ev["invalid_actions"]
    return found


def best_policy(evaluations: list[dict], candidates: list[str], statistics: dict | None) -> str:
    """The candidate ranked first: by the leaderboard when statistics exist, else by mean reward over all its
    episodes (a single policy, or statistics that failed)."""
    if statistics:
        for row in statistics["leaderboard"]:
            if row["policy"] in candidates:
                return row["policy"]
    means: dict[str, list[float]] = {}
    for ev in evaluations:
        if ev["policy_name"] in candidates:
            means.setdefault(ev["policy_name"], []).extend(ev["rewards"])
    return max(means, key=lambda n: sum(means[n]) / len(means[n]))


__all__ = [
    "ComparisonError",
    "as_entry",
    "best_policy",
    "compare_evaluations",
    "display_names",
    "evaluation_results",
    "invalid_actions",
    "report_metadata",
    "summary_statistics",
    "to_spec",
]
