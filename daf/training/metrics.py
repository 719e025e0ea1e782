"""A run's metrics log, `<run_dir>/metrics.jsonl`: one JSON record per PPO update, appended as the run goes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict]:
    """The run's per-update records; a line torn by a crash mid-append is skipped, not fatal."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be produced again)."""
    kept = [record for record in read_metrics(path) if record["step"] <= step]
    path.write_text("".join(json.dumps(record) + "\n" for record in kept))
