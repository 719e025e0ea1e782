"""Nothing a user passes as data runs code: class paths are read as source before anything is imported, whatever an
import raises is a clear error, and a weights file torch's weights_only load refuses never reaches a policy's own
loader. (Mission files: tests/test_missions.py; cached results: test_cache_content.py.)"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
import torch

from daf.config import DAFConfig
from daf.environment_checks import daf_check_environment
from daf.orchestrators import daf_run_comparison_pipeline


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module directory on sys.path whose modules write the marker when they run, and a BROWSER that does too."""
    marker = tmp_path / "MARKER"
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
    (tmp_path / "runs_at_import.py").write_text(code + "def helper():\n    return 1\n")
    (tmp_path / "exits_at_import.py").write_text(
        "import sys\nfrom daf.policies.scripted import RandomPolicy\n"
        "class Policy(RandomPolicy):\n    pass\nsys.exit(3)\n"
    )
    browser = tmp_path / "browser.sh"
    browser.write_text(f"#!/bin/sh\necho opened > {marker}\n")
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("BROWSER", str(browser))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    for name in ("runs_at_import", "exits_at_import"):
        sys.modules.pop(name, None)


def _compare(tmp_path: Path, policy: str):
    return daf_run_comparison_pipeline(
        policies=[policy, "random"], missions=["training_facility_1"], episodes_per_mission=1,
        output_dir=str(tmp_path / "out"),
    )  # fmt: skip


CLASS_PATHS = [
    ("venv.__main__.X", "is a program's entry point (__main__)"),
    ("antigravity.X", "has no class, assignment or import named 'X'"),
    ("this.X", "has no class, assignment or import named 'X'"),
    ("runs_at_import.X", "has no class, assignment or import named 'X'"),
    ("runs_at_import.helper", "has no class, assignment or import named 'helper'"),  # a function is no class
    ("exits_at_import.Policy", "importing 'exits_at_import' raised SystemExit: 3"),
]


@pytest.mark.parametrize(("class_path", "expected"), CLASS_PATHS, ids=[c[0] for c in CLASS_PATHS])
def test_a_class_path_runs_no_module_that_does_not_define_it(tmp_path, marker, capsys, class_path, expected):
    result = _compare(tmp_path, class_path)  # a SystemExit escaping here would end the test run
    assert result.status == "failed" and "policy_comparison" not in result.stages_completed
    assert expected in "\n".join(result.errors), result.errors
    assert not marker.exists() and class_path.rpartition(".")[0] not in sys.modules
    assert "Zen of Python" not in capsys.readouterr().out


def test_a_class_path_through_the_cli_opens_no_browser(tmp_path, marker):
    import prefect.main  # noqa: F401  Prefect's logging is configured before CliRunner swaps the streams
    from typer.testing import CliRunner

    from daf.cli import app

    result = CliRunner().invoke(app, ["evaluate", "antigravity.X", "--mission", "training_facility_1"])
    assert result.exit_code == 2, result.output
    assert "has no class, assignment or import named 'X'" in result.output
    assert not marker.exists()


def test_a_worker_can_allow_only_its_policy_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("DAF_POLICY_MODULES", "mypolicies, other.sub")
    result = _compare(tmp_path, "mettagrid.policy.random_agent.RandomMultiAgentPolicy")
    assert result.status == "failed"
    assert "module 'mettagrid.policy.random_agent' is not among the policy modules this worker allows" in "\n".join(
        result.errors
    )
    assert "DAF_POLICY_MODULES: daf, mypolicies, other.sub" in "\n".join(result.errors)
    assert _compare(tmp_path, "baseline").is_success()  # DAF's own are always allowed


def test_weights_that_weights_only_refuses_never_reach_a_policys_own_loader(tmp_path, marker, monkeypatch):
    """mettagrid's own LSTMPolicy and StatelessPolicy read their file with torch.load and no weights_only (this class
    does the same); under a setting common for old checkpoints that unpickles, so DAF refuses the file first."""
    (tmp_path / "own_loader.py").write_text(
        "import torch\nfrom daf.policies.scripted import RandomPolicy\n\n\nclass Policy(RandomPolicy):\n"
        "    def load_policy_data(self, path):\n        self.state = torch.load(path, map_location='cpu')\n"
    )
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    payload = tmp_path / "policy.pt"
    torch.save({"state_dict": _Payload(marker)}, payload)
    result = daf_run_comparison_pipeline(
        policies=[{"class_path": "own_loader.Policy", "data_path": str(payload)}, "random"],
        missions=["training_facility_1"], episodes_per_mission=1, output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    assert result.status == "failed"
    assert "refused by torch.load(weights_only=True)" in "\n".join(result.errors), result.errors
    assert not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"


def test_a_run_cannot_send_work_to_a_dask_scheduler_the_machine_does_not_list(tmp_path, monkeypatch):
    """A Dask scheduler's replies are unpickled: which ones to trust is the running machine's setting
    (DAF_DASK_ADDRESSES), not a run parameter; refused before anything connects."""
    monkeypatch.delenv("DAF_DASK_ADDRESSES", raising=False)
    kwargs = dict(task_runner="dask", dask_address="tcp://127.0.0.1:1", parallel_evaluation=True)
    result = daf_run_comparison_pipeline(
        policies=["baseline", "random"], missions=["training_facility_1"], episodes_per_mission=1,
        output_dir=str(tmp_path / "out"), **kwargs,
    )  # fmt: skip
    assert result.status == "failed" and result.stages_failed == ["environment_validation"]
    errors = "\n".join(result.errors)
    assert "dask: 'tcp://127.0.0.1:1' is not a Dask scheduler this machine allows" in errors
    assert "DAF_DASK_ADDRESSES (it is not set)" in errors
    monkeypatch.setenv("DAF_DASK_ADDRESSES", "tcp://10.0.0.5:*, tcp://scheduler:8786")
    refused = daf_check_environment(dask_address="tcp://127.0.0.1:1")
    assert "it lists tcp://10.0.0.5:*, tcp://scheduler:8786" in "; ".join(c.message for c in refused.errors)
    allowed = daf_check_environment(dask_address="tcp://10.0.0.5:8786")
    assert [c.status for c in allowed.checks if c.name == "dask"] == ["ok"]
    # A config naming it travels to Dask workers and process pools, which need not list it: only its use is checked.
    monkeypatch.delenv("DAF_DASK_ADDRESSES")
    assert DAFConfig(dask_address="tcp://10.0.0.5:8786").dask_address == "tcp://10.0.0.5:8786"
