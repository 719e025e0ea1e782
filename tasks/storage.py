"""Copying a run's outputs to its result store (daf.result_store) as a task."""

from __future__ import annotations

from prefect import task

from daf.result_store import ResultStore


@task(name="result_storage", task_run_name="result_storage {run_name}")
def store_files_task(store_url: str, run_name: str, files: dict[str, str], link: str | None = None) -> dict:
    """`files` (name -> local path) copied to `<store_url>/<run_name>/`: their stored URLs, and a browser link to
    the stored file named `link` (the HTML report) when one is asked for. The store's own client retries transient
    network errors (botocore, gcsfs), so the task does not retry on top of it."""
    store = ResultStore(store_url)
    stored = store.put(run_name, files)
    return {"files": stored, "link": store.browser_link(stored[link]) if link in stored else None}
