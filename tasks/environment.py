"""Environment validation as a task: a broken machine fails the pipeline before any compute."""

from __future__ import annotations

from prefect import get_run_logger, task

from daf.environment_checks import daf_check_environment
from daf.faults import maybe_fail


class EnvironmentCheckError(RuntimeError):
    pass


@task(name="environment_validation")
def check_environment_task(
    missions: list[str],
    policy_class_paths: list[str],
    output_dir: str,
    device: str = "auto",
    policy_data: list[tuple[str, str | None]] | None = None,
    dask_address: str | None = None,
) -> dict:
    maybe_fail("environment_validation")
    report = daf_check_environment(
        missions, policy_class_paths, output_dir, device, policy_data=policy_data, dask_address=dask_address
    )
    logger = get_run_logger()
    for check in report.warnings:
        logger.warning("%s: %s", check.name, check.message)
    if not report.is_healthy():
        raise EnvironmentCheckError("; ".join(f"{c.name}: {c.message}" for c in report.errors))
    return {c.name: {"status": c.status, "message": c.message} for c in report.checks}
