"""PipelineResult: the one shape every orchestrator returns (as specified by the seed)."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

SUCCESS, PARTIAL, FAILED = "success", "partial", "failed"

# What went wrong, for programs that act on a result (the CLI's exit codes) without reading its error text:
INVALID_INPUT = "invalid_input"  # the arguments were refused before any stage ran
STAGE_FAILED = "stage_failed"  # a stage ran and failed (a required one: failed; an optional one: partial)
STOPPED = "stopped"  # SIGINT or SIGTERM ended the pipeline (outputs["interrupted_by"] names the signal)
ORCHESTRATION = "orchestration"  # the flow run itself crashed outside any stage (e.g. the server went away)
ERROR_KINDS = (INVALID_INPUT, STAGE_FAILED, STOPPED, ORCHESTRATION)


def to_jsonable(value: Any) -> Any:
    """Plain JSON data from dataclasses, pydantic models, paths and containers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return repr(value)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write via a temporary file in the same directory and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class PipelineResult:
    pipeline_name: str
    status: str
    stages_completed: list[str] = field(default_factory=list)
    stages_failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    total_time_seconds: float = 0.0
    timestamp: datetime = field(default_factory=datetime.now)
    # Beyond the seed's fields: one of ERROR_KINDS for a failed or partial result (the first failure's), else None.
    error_kind: str | None = None

    def is_success(self) -> bool:
        """Check if pipeline succeeded."""
        return self.status == SUCCESS

    def summary(self) -> str:
        lines = [
            f"{self.pipeline_name}: {self.status} in {self.total_time_seconds:.1f}s",
            f"  completed: {', '.join(self.stages_completed) or '-'}",
        ]
        if self.stages_failed:
            lines.append(f"  failed: {', '.join(self.stages_failed)}")
        lines += [f"  error: {e}" for e in self.errors]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(to_jsonable(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> PipelineResult:
        data = json.loads(text)
        data["timestamp"] = datetime.fromisoformat(data["timestamp"])
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(path, self.to_json())
