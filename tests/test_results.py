"""PipelineResult: the seed's fields, success, JSON round trip, summary."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from daf.config import DAFConfig
from daf.files import atomic_write_text
from daf.jsonable import to_jsonable
from daf.results import FAILED, PARTIAL, SUCCESS, PipelineResult


def test_fields_match_the_seed():
    fields = {f.name: f for f in dataclasses.fields(PipelineResult)}
    assert list(fields)[:8] == [
        "pipeline_name",
        "status",
        "stages_completed",
        "stages_failed",
        "errors",
        "outputs",
        "total_time_seconds",
        "timestamp",
    ]
    # Beyond the seed: only error_kind, with a default, so the seed's constructions (positional too) still work.
    assert list(fields)[8:] == ["error_kind"] and fields["error_kind"].default is None
    before = datetime.now()
    r = PipelineResult(pipeline_name="train", status=SUCCESS)
    assert r.stages_completed == [] and r.stages_failed == [] and r.errors == [] and r.outputs == {}
    assert r.total_time_seconds == 0.0
    assert isinstance(r.timestamp, datetime) and before <= r.timestamp <= datetime.now()
    # Mutable defaults are not shared between instances.
    r.stages_completed.append("x")
    assert PipelineResult(pipeline_name="b", status=SUCCESS).stages_completed == []


@pytest.mark.parametrize(("status", "ok"), [(SUCCESS, True), (PARTIAL, False), (FAILED, False)])
def test_is_success(status, ok):
    assert PipelineResult(pipeline_name="p", status=status).is_success() is ok


def test_json_round_trip(tmp_path):
    r = PipelineResult(
        pipeline_name="benchmark",
        status=PARTIAL,
        stages_completed=["validate", "train"],
        stages_failed=["evaluate"],
        errors=["evaluate: mission 'x' unknown"],
        outputs={"checkpoint": "/runs/a/policy.pt", "scores": {"baseline": [1.0, 2.5]}, "n": 3, "ok": True},
        total_time_seconds=12.75,
        timestamp=datetime(2025, 1, 2, 3, 4, 5, 678),
    )
    text = r.to_json()
    data = json.loads(text)
    assert data["timestamp"] == "2025-01-02T03:04:05.000678"
    back = PipelineResult.from_json(text)
    assert back == r
    assert isinstance(back.timestamp, datetime)

    path = r.save(tmp_path / "sub" / "result.json")
    assert PipelineResult.from_json(path.read_text()) == r
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temp file left behind


def test_non_json_outputs_are_converted():
    @dataclasses.dataclass
    class Item:
        path: Path
        value: float

    r = PipelineResult(
        pipeline_name="p",
        status=SUCCESS,
        outputs={
            "item": Item(Path("/a/b"), 1.5),
            "config": DAFConfig(seed=3),
            "np": np.float32(2.5),
            "tuple": (1, 2),
            7: "int key",
        },
    )
    out = json.loads(r.to_json())["outputs"]
    assert out["item"] == {"path": "/a/b", "value": 1.5}
    assert out["config"]["seed"] == 3
    assert out["np"] == 2.5 and out["tuple"] == [1, 2] and out["7"] == "int key"
    assert to_jsonable({3}) == [3]


def test_summary():
    r = PipelineResult(
        pipeline_name="sweep",
        status=FAILED,
        stages_completed=["validate"],
        stages_failed=["trial-0", "trial-1"],
        errors=["trial-0: boom", "trial-1: bang"],
        total_time_seconds=3.14159,
    )
    assert r.summary().splitlines() == [
        "sweep: failed in 3.1s",
        "  completed: validate",
        "  failed: trial-0, trial-1",
        "  error: trial-0: boom",
        "  error: trial-1: bang",
    ]
    ok = PipelineResult(pipeline_name="train", status=SUCCESS, total_time_seconds=2)
    assert ok.summary().splitlines() == ["train: success in 2.0s", "  completed: -"]


def test_atomic_write_text(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "f.txt", "hello")
    assert path.read_text() == "hello"
    atomic_write_text(path, "again")
    assert path.read_text() == "again"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]
