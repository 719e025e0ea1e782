"""A cached result is reused only for the same content: an edited mission file, an edited policy module or
replaced weights are new inputs even at the same path, size and mtime."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import textwrap
from pathlib import Path

import torch
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from daf.orchestrators import daf_run_comparison_pipeline
from daf.results import PipelineResult


def evaluation_states(result: PipelineResult) -> list[str]:
    async def read():
        async with get_client() as client:
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[result.outputs["flow_run_id"]]))
            return await client.read_task_runs(flow_run_filter=flt)

    return sorted(r.state.name for r in asyncio.run(read()) if r.name.startswith("evaluation"))


def compare(tmp_path: Path, policies: list, missions: list[str]) -> tuple[PipelineResult, list[float]]:
    result = daf_run_comparison_pipeline(
        policies=policies, missions=missions, episodes_per_mission=3, seed=5, output_dir=str(tmp_path / "out")
    )
    assert result.is_success(), result.errors
    return result, [r for e in result.outputs["evaluation_results"] for r in e["rewards"]]


def test_edited_mission_file_at_the_same_path_is_not_served_from_the_cache(tmp_path):
    mission = tmp_path / "mission.yaml"
    mission.write_text("base: training_facility_1\nmax_steps: 30\n")
    first, short = compare(tmp_path, ["baseline", "noop"], [str(mission)])
    again, same = compare(tmp_path, ["baseline", "noop"], [str(mission)])
    assert evaluation_states(again) == ["Cached", "Cached"] and same == short  # unchanged content: reused

    mission.write_text("base: training_facility_1\nmax_steps: 120\n")
    edited, longer = compare(tmp_path, ["baseline", "noop"], [str(mission)])
    assert evaluation_states(edited) == ["Completed", "Completed"]
    assert sum(longer) > sum(short)  # four times the steps: the baseline collects more hearts


POLICY_V1 = """
from daf.policies.scripted import NoopPolicy


class Policy(NoopPolicy):
    pass
"""
POLICY_V2 = """
from daf.policies.scripted import BaselinePolicy


class Policy(BaselinePolicy):
    pass
"""


def test_edited_policy_source_is_not_served_from_the_cache(tmp_path, monkeypatch):
    root = tmp_path / "site"
    package = root / "userpolicy_cache_test"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(POLICY_V1))
    monkeypatch.syspath_prepend(str(root))
    try:
        first, noop = compare(tmp_path, ["userpolicy_cache_test.Policy"], ["training_facility_1"])
        assert evaluation_states(first) == ["Completed"] and sum(noop) == 0

        # Edited where it lies, then imported afresh, as the next process that runs the pipeline would.
        (package / "__init__.py").write_text(textwrap.dedent(POLICY_V2))
        del sys.modules["userpolicy_cache_test"]
        edited, baseline = compare(tmp_path, ["userpolicy_cache_test.Policy"], ["training_facility_1"])
        assert evaluation_states(edited) == ["Completed"] and sum(baseline) > 0
    finally:
        sys.modules.pop("userpolicy_cache_test", None)


def test_weights_replaced_with_same_size_and_mtime_are_not_served_from_the_cache(tmp_path):
    from daf.missions import get_mission
    from daf.policies.neural import MLPPolicy
    from daf.simulation import env_interface

    env = env_interface([get_mission("training_facility_1")])
    weights, other = tmp_path / "weights.pt", tmp_path / "weightz.pt"  # torch.save names the archive after the file
    for seed, path in ((0, weights), (1, other)):
        torch.manual_seed(seed)
        MLPPolicy(env).save_policy_data(str(path))
    assert weights.stat().st_size == other.stat().st_size and weights.read_bytes() != other.read_bytes()

    spec = [{"class_path": "mlp", "data_path": str(weights)}]
    compare(tmp_path, spec, ["training_facility_1"])
    unchanged, _ = compare(tmp_path, spec, ["training_facility_1"])
    assert evaluation_states(unchanged) == ["Cached"]
    stat = weights.stat()
    shutil.copyfile(other, weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)

    replaced, _ = compare(tmp_path, spec, ["training_facility_1"])
    assert evaluation_states(replaced) == ["Completed"]  # new bytes: evaluated again


class _Payload:
    """Unpickling it writes the marker file: what a rewritten cache record would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_a_rewritten_cache_record_is_never_loaded_as_code(tmp_path, caplog):
    """Whatever rewrote DAF's cache records (a bundle's import code, during validation) runs nothing in the next
    ordinary comparison: records that do not name DAF's JSON serializer are cache misses, and are replaced."""
    import itertools
    import json
    import pickle

    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    marker = tmp_path / "ran"
    (tmp_path / "marker_decoder.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\ndef hook(d):\n    return d\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        first, rewards = compare(tmp_path, ["baseline", "noop"], ["training_facility_1"])
        storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
        records = sorted((storage / "daf-cache-records").glob("evaluate_task-*"))
        assert len(records) >= 2
        tampered = {
            # Prefect's own pickle serializer, naming a payload written where the result was.
            "pickle": {"type": "pickle", "picklelib": "pickle"},
            # Prefect's JSON serializer imports any object_decoder it is told to.
            "json": {"type": "json", "object_decoder": "marker_decoder.hook"},
        }
        # Every evaluation record there (other tests of this process may have left some): this run's among them.
        for record, serializer in zip(records, itertools.cycle(tampered.values())):
            metadata = json.loads(record.read_text())
            metadata["serializer"] = serializer
            record.write_text(json.dumps(metadata))
            if serializer["type"] == "pickle":
                Path(metadata["storage_key"]).write_bytes(pickle.dumps(_Payload(marker)))
        caplog.set_level("WARNING", logger="daf.results")
        again, same = compare(tmp_path, ["baseline", "noop"], ["training_facility_1"])
        assert not marker.exists()
        assert "marker_decoder" not in sys.modules
        assert same == rewards and evaluation_states(again) == ["Completed", "Completed"]  # recomputed
        assert "not written by DAF's JSON serializer" in caplog.text
        third, _ = compare(tmp_path, ["baseline", "noop"], ["training_facility_1"])
        assert evaluation_states(third) == ["Cached", "Cached"]  # the records were replaced with DAF's own
    finally:
        sys.path.remove(str(tmp_path))
