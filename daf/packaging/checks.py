"""The validation checks that read an extracted bundle as data: nothing of the bundle runs here.

Checksums against the manifest, the policy spec, the weights (which must load with `torch.load(weights_only=True)`)
and the manifest's mission names. Each check returns what it found and a list of errors, empty when it passed; the
checks that import and run the bundle's code are daf.packaging.sandbox's.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePosixPath

from mettagrid.policy.submission import POLICY_SPEC_FILENAME, SubmissionPolicySpec

from daf.files import UnsafeTorchFile, read_torch_file
from daf.missions import list_missions
from daf.packaging.extract import bundle_files
from daf.packaging.format import MANIFEST_FILENAME, digest

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def check_manifest(root: Path) -> tuple[dict, list[str]]:
    """The manifest, and every file that is unlisted, missing, or does not match its checksum."""
    manifest_path = root / MANIFEST_FILENAME
    if not manifest_path.is_file():
        return {}, [f"{MANIFEST_FILENAME} is missing: not a DAF bundle, or it was stripped"]
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = manifest["files"]
        if not isinstance(listed, dict):
            raise TypeError("'files' is not a mapping")
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return {}, [f"{MANIFEST_FILENAME} is malformed: {exc}"]
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
    try:
        raw = json.loads(spec_path.read_text())
        SubmissionPolicySpec.model_validate(raw)
    except Exception as exc:  # json and pydantic errors alike: report, never raise
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
    """Weights must load with torch.load(weights_only=True): this refuses pickles that would run code."""
    if data_path is None:
        return "no weights", []
    path = root / data_path
    if not looks_like_torch(path):
        return f"{data_path}: not a torch file; left to the policy's loader", []
    problem = unsafe_weights(path)
    if problem:
        return "", [f"{data_path} {problem}"]
    return f"{data_path} loads with weights_only=True", []


def check_manifest_missions(manifest: dict) -> tuple[list[str], list[str]]:
    """The manifest may only name DAF's missions: a path would make the validator read (and build) a file of its
    own disk the bundle chose, such as a 100000x100000 map."""
    named = manifest.get("missions") or []
    if not isinstance(named, list) or not all(isinstance(m, str) for m in named):
        return [], [f"missions must be a list of mission names, got {type(named).__name__}: {str(named)[:100]!r}"]
    unknown = [m for m in named if m not in list_missions()]
    if unknown:
        return [], [f"unknown mission(s) {unknown[:5]} (a bundle names DAF missions: {', '.join(list_missions())})"]
    return named, []


def looks_like_torch(path: Path) -> bool:
    """torch.save output (a zip holding */data.pkl), a raw pickle, or a torch-ish suffix."""
    if path.suffix in TORCH_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        if fh.read(1) == b"\x80":
            return True
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("data.pkl") for n in zf.namelist())
    return False


def unsafe_weights(path: Path) -> str | None:
    """Why a torch file fails torch.load(weights_only=True) (an unsafe or corrupt pickle), or None when it loads."""
    try:
        read_torch_file(path)
    except UnsafeTorchFile as exc:
        return f"refused by torch.load(weights_only=True) (unsafe or corrupt pickle): {exc}"
    return None
