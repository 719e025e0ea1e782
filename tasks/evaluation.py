"""Evaluation of one policy on one mission as a task (the unit of parallel evaluation)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy

from daf.comparison import to_spec
from daf.config import PolicyEntry
from daf.content import mission_digest, path_digest, policy_source_digest
from daf.evaluation import evaluate
from daf.faults import maybe_fail
from daf.tasks.common import RETRY_OPTIONS, make_cache_key, retry_transient


def _cache_key(context, parameters) -> str:
    entry: PolicyEntry = parameters["entry"]
    payload = {k: v for k, v in parameters.items() if k != "entry"}
    payload["entry"] = entry.model_dump(mode="json")
    # What the evaluation reads, by content: the weights, the mission's resolved config, the policy's code.
    payload["weights_sha256"] = path_digest(entry.data_path)
    payload["mission_sha256"] = mission_digest(parameters["mission"])
    payload["policy_source"] = policy_source_digest(entry.class_path)
    return make_cache_key(evaluate_task.fn, payload)


@task(
    name="evaluation",
    task_run_name="evaluation {name} on {mission}",
    cache_policy=CacheKeyFnPolicy(cache_key_fn=_cache_key),
    retry_condition_fn=retry_transient,
    persist_result=True,
    **RETRY_OPTIONS,
)
def evaluate_task(entry: PolicyEntry, name: str, mission: str, episodes: int, seed: int, device: str = "cpu") -> dict:
    maybe_fail("evaluation")
    return evaluate(to_spec(entry), mission, episodes, seed, policy_name=name, device=device).to_dict()
