"""A run's outputs copied to its result store (daf.result_store), and policy weights fetched from URLs
(daf.policy_urls), as tasks."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from daf.policy_urls import fetch_verified
from daf.result_store import ResultStore


@task(name="result_storage", task_run_name="result_storage {run_name}")
def store_files_task(store_url: str, run_name: str, files: dict[str, str], link: str | None = None) -> dict:
    """`files` (name -> local path) copied to `<store_url>/<run_name>/`: their stored URLs, and a browser link to
    the stored file named `link` (the HTML report) when one is asked for. The store's own client retries transient
    network errors (botocore, gcsfs), so the task does not retry on top of it."""
    store = ResultStore(store_url)
    stored = store.put(run_name, files)
    return {"files": stored, "link": store.browser_link(stored[link]) if link in stored else None}


@task(name="policy_fetch")
def fetch_weights_task(urls: list[str], cache_dir: str) -> dict[str, str]:
    """Each weights URL fetched into `cache_dir` and checked against its recorded sha256: URL -> local path."""
    return {url: fetch_verified(url, Path(cache_dir)) for url in urls}
