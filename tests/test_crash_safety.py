"""SIGKILL in the middle of writing artifacts never leaves a half-written file under its final name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env={**os.environ})


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the child never reached the point to kill it at"
        time.sleep(0.01)


def test_sigkill_during_packaging_leaves_no_bundle(tmp_path):
    weights = tmp_path / "big.pt"
    out = tmp_path / "bundles"
    # Big enough that hashing and deflating take a while: the kill lands mid-build.
    code = f"""
        import torch
        from mettagrid.policy.policy import PolicySpec
        from daf.packaging import build_package
        torch.save({{"blob": torch.rand(60_000_000)}}, {str(weights)!r})
        open({str(tmp_path / "ready")!r}, "w").close()
        build_package(PolicySpec(class_path="baseline", data_path={str(weights)!r}), {str(out)!r}, name="big")
        open({str(tmp_path / "done")!r}, "w").close()
    """
    child = _spawn(code)
    try:
        _wait_for(lambda: (tmp_path / "ready").exists() and out.is_dir() and any(out.iterdir()))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    assert not (tmp_path / "done").exists(), "the build finished before the kill; the test proved nothing"
    assert not (out / "big.zip").exists()


def test_sigkill_during_report_writing_leaves_only_complete_files(tmp_path):
    out = tmp_path / "report"
    code = f"""
        from daf.reports import write_report
        from daf.stats import compare_scores
        stats = compare_scores({{"a": {{"m": [1.0, 2.0, 3.0]}}, "b": {{"m": [2.0, 3.0, 4.0]}}}}, n_resamples=50)
        i = 0
        while True:  # rewrite the report until killed
            write_report(stats, {{"seed": i}}, {str(out)!r})
            i += 1
            open({str(tmp_path / "written")!r}, "w").close()
    """
    child = _spawn(code)
    try:
        _wait_for(lambda: (tmp_path / "written").exists())
        time.sleep(0.7)  # land somewhere inside a later write
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    html = (out / "report.html").read_text()
    assert html.rstrip().endswith("</html>")
    data = json.loads((out / "report.json").read_text())
    assert data["statistics"]["policies"] == ["a", "b"]
    assert (out / "summary.md").read_text().strip()
