"""What people read is honest and inert: a policy that emits no valid action is called out wherever its rewards are
shown, and no string from a user or a bundle reaches a terminal or a Markdown summary as control characters."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest
from mettagrid.policy.policy import PolicySpec
from typer.testing import CliRunner

from daf.orchestrators import daf_run_comparison_pipeline
from daf.packaging import build_package

INVALID_POLICY = """
import numpy as np
from daf.policies.scripted import RandomPolicy


class Policy(RandomPolicy):
    \"\"\"Writes an action id no mission has (what a NaN cast to int, or an off-by-one head, produces).\"\"\"

    def step_batch(self, observations, actions):
        actions[:] = np.iinfo(actions.dtype).max
"""
HOSTILE = "evil\x1b[2J\x1b[32m bundle valid\u202e"


@pytest.fixture
def invalid_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "invalid_actions_policy.py").write_text(INVALID_POLICY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "invalid_actions_policy.Policy"
    sys.modules.pop("invalid_actions_policy", None)


def _cli(args: list[str]):
    import prefect.main  # noqa: F401  Prefect's logging is configured before CliRunner swaps the streams

    from daf.cli import app

    return CliRunner().invoke(app, args)


def test_invalid_actions_are_called_out_in_results_reports_and_the_cli(tmp_path, invalid_policy):
    result = daf_run_comparison_pipeline(
        policies=[{"class_path": invalid_policy, "name": "broken"}, "random"],
        missions=["training_facility_1"],
        episodes_per_mission=2,
        output_dir=str(tmp_path / "out"),
    )
    assert result.is_success(), result.errors
    by_policy = {r["policy"]: r for r in result.outputs["evaluation_results"]}
    invalid = by_policy["broken"]["invalid_actions"]
    assert invalid > 0 and by_policy["random"]["invalid_actions"] == 0
    warning = "chose actions that are no action of the mission"
    html = Path(result.outputs["report_html"]).read_text()
    assert f"broken {warning} ({invalid} on training_facility_1)" in html
    summary = Path(result.outputs["report_markdown"]).read_text()
    assert summary.startswith("# ") and f"**Warning:** broken {warning}" in summary
    assert "random " + warning not in html

    cli = _cli(["evaluate", invalid_policy, "-n", "1", "--output-dir", str(tmp_path / "cli")])
    assert cli.exit_code == 0, cli.output
    assert "that are no action of the mission: its rewards do not measure a working policy" in cli.output
    (saved,) = (tmp_path / "cli" / "evaluations").glob("*.json")
    assert json.loads(saved.read_text())[0]["invalid_actions"] > 0


def test_control_characters_in_names_are_shown_not_obeyed(tmp_path):
    cli = _cli(["compare", "--policy", f"{HOSTILE}=baseline", "--policy", "random", "--mission",
                "training_facility_1", "-n", "2", "--output-dir", str(tmp_path / "out")])  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert "\x1b" not in cli.output and "\u202e" not in cli.output
    assert "evil\\x1b[2J\\x1b[32m bundle valid\\u202e" in cli.output  # the name, visibly
    (summary,) = (tmp_path / "out").glob("runs/*/report/summary.md")
    assert "\x1b" not in summary.read_text() and "\\x1b" in summary.read_text()

    # An error naming the input (an unknown policy) too.
    bad = _cli(["evaluate", f"no_such_module_{HOSTILE}.X"])
    assert bad.exit_code == 2 and "\x1b" not in bad.output and "\u202e" not in bad.output


def test_control_characters_in_a_bundle_are_shown_not_obeyed(tmp_path):
    bundle = build_package(PolicySpec(class_path="baseline"), tmp_path / "bundles", name="b")
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(hostile, "w") as out:
        for info in src.infolist():
            out.writestr(info, src.read(info))
        out.writestr(f"{HOSTILE}.txt", "not listed in the manifest")
    cli = _cli(["validate-package", str(hostile)])
    assert cli.exit_code == 1, cli.output
    assert "INVALID" in cli.output
    assert "\x1b" not in cli.output and "\u202e" not in cli.output and "\\x1b[2J" in cli.output
