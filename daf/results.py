"""PipelineResult: the one shape every orchestrator returns (as specified by the seed)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from daf.files import atomic_write_text
from daf.jsonable import to_jsonable

SUCCESS, PARTIAL, FAILED = "success", "partial", "failed"

# What went wrong, for programs that act on a result (the CLI's exit codes) without reading its error text:
INVALID_INPUT = "invalid_input"  # the arguments were refused before any stage ran
STAGE_FAILED = "stage_failed"  # a stage ran and failed (a required one: failed; an optional one: partial)
STOPPED = "stopped"  # SIGINT or SIGTERM ended the pipeline (outputs["interrupted_by"] names the signal)
ORCHESTRATION = "orchestration"  # the flow run itself crashed outside any stage (e.g. the server went away)
ERROR_KINDS = (INVALID_INPUT, STAGE_FAILED, STOPPED, ORCHESTRATION)


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
