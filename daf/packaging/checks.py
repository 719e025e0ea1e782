"""The validation checks that read an extracted bundle as data: nothing of the bundle runs here.

Checksums against the manifest, the policy spec, the weights (which must load with `torch.load(weights_only=True)`)
and the manifest's mission names. Each check returns what it found and a list of errors, empty when it passed; the
checks that import and run the bundle's code are daf.packaging.sandbox's.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from mettagrid.policy.submission import POLICY_SPEC_FILENAME, SubmissionPolicySpec

from daf.missions import list_missions
from daf.packaging.extract import DEFAULT_MAX_ENTRIES, bundle_files
from daf.packaging.format import MANIFEST_FILENAME, digest
from daf.torch_files import (
    UnsafeTorchFile,
    first_non_finite,
    looks_like_torch,
    read_torch_file,
    weights_refusal,
)

# The JSON a bundle carries is refused above these sizes before it is read: parsed, `{},` takes ~25 bytes of
# memory a byte (200 MB of it took the validator to 5-8 GB). A policy spec is a class path and a few init kwargs.
MAX_POLICY_SPEC_BYTES = 64 << 10
# The manifest lists every file as {"sha256": 64 hex, "size": n} under its name, ~150 bytes for a typical name:
# 512 bytes an entry of the archive's entry limit, plus 64 KiB for versions, training config and evaluation summary.
MANIFEST_BYTES_PER_ENTRY = 512
MANIFEST_BASE_BYTES = 64 << 10
MAX_JSON_DEPTH = 64  # DAF's own JSON nests a few levels; deeper is refused before pydantic or a walk recurses on it


MAX_MANIFEST_BYTES = 16 << 20  # whatever entry limit a caller passes: ~400 MB parsed at worst


def manifest_byte_limit(max_entries: int = DEFAULT_MAX_ENTRIES) -> int:
    return min(MANIFEST_BASE_BYTES + MANIFEST_BYTES_PER_ENTRY * max_entries, MAX_MANIFEST_BYTES)


def read_json_bounded(path: Path, max_bytes: int) -> tuple[Any, str | None]:
    """(value, None), or (None, why not): over `max_bytes` on disk (checked before reading), not UTF-8 JSON, or
    nested deeper than MAX_JSON_DEPTH."""
    size = path.stat().st_size
    if size > max_bytes:
        return None, f"is {size} bytes, over the {max_bytes}-byte limit for it (refused unread)"
    try:
        value = json.loads(path.read_bytes())
    except RecursionError:
        return None, f"is nested deeper than {MAX_JSON_DEPTH} levels"
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        return None, f"is malformed: {str(exc)[:200]}"
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        return None, f"is nested deeper than {MAX_JSON_DEPTH} levels"
    return value, None


def _depth_exceeds(value: Any, limit: int) -> bool:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def check_manifest(root: Path, max_entries: int = DEFAULT_MAX_ENTRIES) -> tuple[dict, list[str]]:
    """The manifest, and every file that is unlisted, missing, or does not match its checksum. The manifest may
    be `manifest_byte_limit(max_entries)` bytes at most."""
    manifest_path = root / MANIFEST_FILENAME
    if not manifest_path.is_file():
        return {}, [f"{MANIFEST_FILENAME} is missing: not a DAF bundle, or it was stripped"]
    manifest, problem = read_json_bounded(manifest_path, manifest_byte_limit(max_entries))
    if problem:
        return {}, [f"{MANIFEST_FILENAME} {problem}"]
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return {}, [f"{MANIFEST_FILENAME} is malformed: it is not a mapping with a 'files' mapping"]
    listed = manifest["files"]
    errors = []
    present = bundle_files(root) - {MANIFEST_FILENAME}
    for arcname in sorted(present - set(listed)):
        errors.append(f"{arcname} is in the bundle but not listed in {MANIFEST_FILENAME}")
    for arcname in sorted(set(listed) - present):
        errors.append(f"{arcname} is listed in {MANIFEST_FILENAME} but missing from the bundle")
    for arcname in sorted(present & set(listed)):
        expected = listed[arcname] if isinstance(listed[arcname], dict) else {}
        actual = digest(root / arcname)
        if actual["size"] != expected.get("size") or actual["sha256"] != expected.get("sha256"):
            errors.append(f"{arcname} does not match its checksum in {MANIFEST_FILENAME} (modified or corrupted)")
    return manifest, errors


def check_policy_spec(root: Path) -> tuple[dict, list[str]]:
    """The policy spec as read, and what would make the loader fail or run code before the policy does."""
    spec_path = root / POLICY_SPEC_FILENAME
    if not spec_path.is_file():
        return {}, [f"{POLICY_SPEC_FILENAME} is missing from the bundle root: the loader cannot know the policy class"]
    raw, problem = read_json_bounded(spec_path, MAX_POLICY_SPEC_BYTES)
    if problem:
        return {}, [f"{POLICY_SPEC_FILENAME} {problem}"]
    try:
        SubmissionPolicySpec.model_validate(raw)
    except Exception as exc:  # pydantic's errors: report, never raise
        return {}, [f"{POLICY_SPEC_FILENAME} is malformed: {exc}"]
    errors = []
    if raw.get("setup_script"):
        errors.append(f"setup_script {raw['setup_script']!r} is not allowed: it would run code at load time")
    data_path = raw.get("data_path")
    if data_path is not None:
        rel = PurePosixPath(data_path)
        if rel.is_absolute() or ".." in rel.parts:
            errors.append(f"data_path {data_path!r} must be relative and inside the bundle")
        elif not (root / rel).is_file():
            errors.append(f"data_path {data_path!r} is not a file in the bundle")
    return raw, errors


def check_weights(root: Path, data_path: str | None) -> tuple[str, list[str]]:
    """Weights must load with torch.load(weights_only=True), within DAF's bounds on torch files, and hold only
    finite floating tensors: this refuses pickles that would run code, files sized to take the validator's memory,
    and NaN or infinite weights (which act, and score 0, without an error)."""
    if data_path is None:
        return "no weights", []
    path = root / data_path
    if not looks_like_torch(path):
        return f"{data_path}: not a torch file; left to the policy's loader", []
    try:
        loaded = read_torch_file(path, mmap=True)  # mmap: the tensors are only looked at here, never kept
    except UnsafeTorchFile as exc:
        return "", [f"{data_path} {weights_refusal(exc)}"]
    bad = first_non_finite(loaded)
    if bad:
        # A policy with NaN weights acts, and scores 0, without an error.
        return "", [f"{data_path}: tensor {bad!r} holds NaN or infinite values"]
    return f"{data_path} loads with weights_only=True; every floating tensor is finite", []


def check_manifest_missions(manifest: dict) -> tuple[list[str], list[str]]:
    """The manifest may only name DAF's missions: a path would make the validator read (and build) a file of its
    own disk the bundle chose, such as a 100000x100000 map."""
    named = manifest.get("missions") or []
    if not isinstance(named, list) or not all(isinstance(m, str) for m in named):
        return [], [f"missions must be a list of mission names, got {type(named).__name__}: {str(named)[:100]!r}"]
    if len(set(named)) != len(named):  # each would be run again: a list of one name 100,000 times is hours
        return [], [f"missions must name each mission once ({len(named)} names, {len(set(named))} distinct)"]
    unknown = [m[:100] for m in named if m not in list_missions()]
    if unknown:
        return [], [f"unknown mission(s) {unknown[:5]} (a bundle names DAF missions: {', '.join(list_missions())})"]
    return named, []
