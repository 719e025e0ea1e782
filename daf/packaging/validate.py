"""Validating a bundle the way a tournament would load it, into a report that lists every check and every problem.

The order is the trust order: the archive is extracted safely (daf.packaging.extract), then read as data
(daf.packaging.checks), and only a bundle that passed all of that has its code imported and run, in a child
process (daf.packaging.sandbox).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from daf.missions import list_missions
from daf.packaging.checks import check_manifest, check_manifest_missions, check_policy_spec, check_weights
from daf.packaging.extract import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_TOTAL_BYTES,
    Limits,
    bundle_files,
    extract_safely,
)

PASS, FAIL, SKIP = "pass", "fail", "skip"
# A hostile bundle can hold thousands of problems (200,000 bad entries once took 249 s and 38 MB of terminal output to
# show): a check reports its first few, then how many more, and no line of a report is longer than a screenful.
MAX_ERRORS_PER_CHECK = 20
MAX_LINE_CHARS = 500


class PackageValidationError(ValueError):
    """Raised by `ensure_valid` for a bundle that failed validation."""


class Check(NamedTuple):
    name: str
    status: str  # "pass", "fail" or "skip"
    message: str


@dataclass
class ValidationReport:
    path: str
    checks: list[Check] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and any(c.status == PASS for c in self.checks)

    def add(self, name: str, errors: list[str], message: str = "") -> bool:
        """Record one check: failed when `errors` is non-empty. Returns whether it passed. At most
        MAX_ERRORS_PER_CHECK errors are kept, then "... and N more"; every text is cut to MAX_LINE_CHARS."""
        if errors:
            shown = [_clip(e) for e in errors[:MAX_ERRORS_PER_CHECK]]
            if len(errors) > MAX_ERRORS_PER_CHECK:
                shown.append(f"... and {len(errors) - MAX_ERRORS_PER_CHECK} more")
            self.checks.append(Check(name, FAIL, "; ".join(shown)))
            self.errors.extend(f"{name}: {e}" for e in shown)
            return False
        self.checks.append(Check(name, PASS, _clip(message)))
        return True

    def skip(self, name: str, reason: str) -> None:
        self.checks.append(Check(name, SKIP, _clip(reason)))

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "ok": self.ok,
            "checks": [c._asdict() for c in self.checks],
            "errors": list(self.errors),
        }


def _clip(text: str) -> str:
    text = str(text)
    if len(text) <= MAX_LINE_CHARS:
        return text
    return f"{text[:MAX_LINE_CHARS]}... ({len(text) - MAX_LINE_CHARS} more characters)"


def ensure_valid(report: ValidationReport) -> ValidationReport:
    """Raise PackageValidationError listing the errors of a failed report (at most MAX_ERRORS_PER_CHECK a check, as
    the report keeps them); return it otherwise."""
    if not report.ok:
        details = "\n".join(f"  - {e}" for e in report.errors) or "  - no check passed"
        raise PackageValidationError(f"policy bundle {report.path} is not valid:\n{details}")
    return report


def validate_package(
    path: str | os.PathLike[str],
    *,
    missions: list[str] | None = None,
    reward_threshold: float | None = None,
    eval_episodes: int = 5,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> ValidationReport:
    """Check a bundle the way a tournament would load it; every problem goes into the report, nothing raises.

    Missions: the given ones, else the mission names in the manifest, else the first DAF mission. Nothing from the
    bundle runs in this process: archive entries, checksums, the spec and the manifest are read as data, weights
    must pass torch.load(weights_only=True), and the checks that import and run the bundle's code happen in a
    child process with a time and memory limit (daf.packaging.sandbox, which says what that does and does not
    protect).
    """
    report = ValidationReport(path=str(path))
    root = Path(tempfile.mkdtemp(prefix="daf-validate-"))
    try:
        limits = Limits(max_file_bytes, max_total_bytes, max_entries)
        _validate_into(report, Path(path), root, missions, reward_threshold, eval_episodes, limits)
    except Exception as exc:  # a bug or an unforeseen bundle shape must still end up in the report
        report.add("internal", [f"{type(exc).__name__}: {exc}"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return report


def _validate_into(
    report: ValidationReport,
    path: Path,
    root: Path,
    missions: list[str] | None,
    reward_threshold: float | None,
    eval_episodes: int,
    limits: Limits,
) -> None:
    # Imported here, not with the package: the child runs `python -m daf.packaging.sandbox`, which imports this
    # package first, and a sandbox module imported by then would exist twice in the child (runpy warns).
    from daf.packaging.sandbox import run_code_checks

    extract_errors = extract_safely(path, root, limits)
    if not report.add("archive", extract_errors, f"{len(bundle_files(root))} files extracted safely"):
        return
    manifest, manifest_errors = check_manifest(root, limits.max_entries)
    report.add("checksums", manifest_errors, "every file matches manifest.json")
    spec_json, spec_errors = check_policy_spec(root)
    report.add("policy_spec", spec_errors, spec_json.get("class_path", "") if spec_json else "")
    if manifest_errors or spec_errors:
        return
    weights_message, weights_errors = check_weights(root, spec_json.get("data_path"))
    if not report.add("weights", weights_errors, weights_message):
        return
    named, mission_errors = check_manifest_missions(manifest)
    if not report.add("manifest_missions", mission_errors, ", ".join(named) or "none named"):
        return
    for item in run_code_checks(root, list(missions or named or list_missions()[:1]), reward_threshold, eval_episodes):
        if item["skipped"]:
            report.skip(item["name"], item["message"])
        else:
            report.add(item["name"], item["errors"], item["message"])
