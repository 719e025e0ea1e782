"""Building and validating a deployment bundle as tasks."""

from __future__ import annotations

from prefect import task

from daf.comparison import to_spec
from daf.config import PolicyEntry
from daf.faults import maybe_fail
from daf.packaging import build_package, ensure_valid, validate_package
from daf.tasks.common import RETRY_OPTIONS, retry_transient


@task(name="packaging", task_run_name="packaging {name}", retry_condition_fn=retry_transient, **RETRY_OPTIONS)
def build_package_task(
    entry: PolicyEntry, output_dir: str, name: str, missions: list[str], evaluation: dict | None = None
) -> str:
    maybe_fail("packaging")
    return str(build_package(to_spec(entry), output_dir, name=name, missions=missions, evaluation=evaluation))


@task(name="package_validation")
def validate_package_task(path: str, missions: list[str]) -> dict:
    report = ensure_valid(validate_package(path, missions=missions))
    return report.to_dict()
