"""Evaluation of one policy on one mission as a task (the unit of parallel evaluation)."""

from __future__ import annotations

from prefect import get_run_logger

from daf.comparison import to_spec
from daf.config import PolicyEntry
from daf.evaluation import evaluate
from daf.faults import maybe_fail
from daf.tasks.common import content_cached_task, content_digests


def _cache_payload(parameters: dict) -> dict:
    entry: PolicyEntry = parameters["entry"]
    payload = {k: v for k, v in parameters.items() if k != "entry"}
    payload["entry"] = entry.model_dump(mode="json")
    # The weights, the mission and the policy's code by content, not by name.
    return payload | content_digests(entry.class_path, entry.data_path, [parameters["mission"]])


@content_cached_task("evaluation", "evaluation {name} on {mission}", _cache_payload)
def evaluate_task(entry: PolicyEntry, name: str, mission: str, episodes: int, seed: int, device: str = "cpu") -> dict:
    maybe_fail("evaluation")
    result = evaluate(to_spec(entry), mission, episodes, seed, policy_name=name, device=device)
    if result.invalid_actions:
        get_run_logger().warning(
            f"{name} chose {result.invalid_actions} of {result.agent_steps} actions on {mission} that are no action "
            "of the mission: its rewards do not measure a working policy"
        )
    return result.to_dict()
