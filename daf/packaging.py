"""Policy bundles: build a deterministic CoGames-style zip, and validate one before it is shared.

A bundle is a zip with, at its root:
- `policy_spec.json`: {"class_path", "data_path" (relative to the bundle or null), "init_kwargs", "setup_script": null},
  the format `mettagrid.policy.prepare_policy_spec.load_policy_spec_from_path` reads;
- the weights file under `weights/`;
- the policy's own source (module file plus every package `__init__.py` above it) when the class lives neither in
  installed site-packages nor in `daf` (a policy of `daf` needs `daf` installed where the bundle is loaded);
- `manifest.json`: versions, provenance, evaluation summary, missions, and sha256 + size of every other file.

Determinism: entries are sorted, stamped 1980-01-01 00:00:00 with mode 0644, and the manifest is written with sorted
keys, so the same inputs give the same bytes (with the same zlib). The manifest's `created_at` is, in this order, the
`created_at` argument, `SOURCE_DATE_EPOCH` (the reproducible-builds convention), the source checkpoint's mtime, or
null when none of these exist: the wall clock is never read, because that would make every rebuild differ.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from mettagrid.policy.policy import PolicySpec
from mettagrid.policy.submission import POLICY_SPEC_FILENAME, SubmissionPolicySpec

from daf.bundle_sandbox import run_code_checks
from daf.config import DAFTrainingConfig
from daf.content import installed_versions, is_installed_library
from daf.files import UnsafeTorchFile, atomic_path, read_torch_file
from daf.jsonable import to_jsonable
from daf.missions import get_mission, list_missions
from daf.policies.registry import check_spec
from daf.training.checkpoints import CONFIG_FILE, checkpoint_holding

MANIFEST_FILENAME = "manifest.json"
BUNDLE_FORMAT = "daf-policy-bundle"
BUNDLE_FORMAT_VERSION = 1
WEIGHTS_DIR = "weights"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest timestamp a zip entry can hold
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")

DEFAULT_MAX_FILE_BYTES = 1 << 30  # 1 GiB per file
DEFAULT_MAX_TOTAL_BYTES = 2 << 30  # 2 GiB uncompressed in all
DEFAULT_MAX_ENTRIES = 10_000
COMPILED_SUFFIXES = (".pyc", ".pyo", ".so", ".pyd", ".dylib", ".dll")

PASS, FAIL, SKIP = "pass", "fail", "skip"


class PackagingError(ValueError):
    """The inputs cannot be turned into a bundle (the message says which and why)."""


class PackageValidationError(ValueError):
    """Raised by `ensure_valid` for a bundle that failed validation."""


# ---------------------------------------------------------------------------------------------------------------------
# Building


def build_package(
    policy_spec: PolicySpec,
    output_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    missions: list[str] | None = None,
    evaluation: dict | None = None,
    training_config: dict | None = None,
    source_checkpoint: str | None = None,
    created_at: datetime | str | None = None,
) -> Path:
    """Write `<output_dir>/<name>.zip` atomically and return its path.

    `source_checkpoint` defaults to the spec's data_path; when it is a DAF checkpoint, the training config DAF
    stored with it travels along (without machine paths) unless `training_config` is given.
    """
    cls = check_spec(policy_spec)
    class_path = _canonical_class_path(cls)
    name = _bundle_name(name, cls)
    missions = list(missions or [])
    for mission in missions:
        get_mission(mission)  # unknown names fail here, not when the bundle is validated elsewhere

    files: dict[str, Path | bytes] = dict(policy_source_files(cls))
    data_arcname = None
    if policy_spec.data_path:
        data_file = Path(policy_spec.data_path)
        if not data_file.is_file():
            raise PackagingError(f"data_path {data_file} is not a file (only single-file weights can be bundled)")
        if _looks_like_torch(data_file) and (problem := unsafe_weights(data_file)):
            raise PackagingError(f"data_path {data_file}: {problem}")  # before a bundle that cannot load is written
        data_arcname = f"{WEIGHTS_DIR}/{data_file.name}"
        _add_file(files, data_arcname, data_file)

    spec_json = {
        "class_path": class_path,
        "data_path": data_arcname,
        "init_kwargs": to_jsonable(dict(policy_spec.init_kwargs)),
        "setup_script": None,
    }
    _add_file(files, POLICY_SPEC_FILENAME, _json_bytes(spec_json))

    checkpoint = source_checkpoint or policy_spec.data_path
    if training_config is None and checkpoint:
        training_config = find_training_config(Path(checkpoint).absolute())
    stamp, stamp_source = _creation_time(created_at, checkpoint)
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "name": name,
        "created_at": stamp,
        "created_at_source": stamp_source,
        "versions": installed_versions(("mettagrid", "torch")),
        "policy": spec_json,
        "source_checkpoint": _relative_checkpoint(Path(checkpoint).absolute()) if checkpoint else None,
        "training_config": to_jsonable(training_config),
        "evaluation": to_jsonable(evaluation),
        "missions": missions,
        "files": {arc: _digest(src) for arc, src in sorted(files.items())},
    }
    _add_file(files, MANIFEST_FILENAME, _json_bytes(manifest))
    return _write_zip_atomically(files, Path(output_dir) / f"{name}.zip")


def _canonical_class_path(cls: type) -> str:
    # The defining module, not a re-export: that is the file the bundle must carry and the loader must import.
    if cls.__module__ == "__main__":
        raise PackagingError(f"{cls.__qualname__} is defined in __main__; move it into a module to package it")
    if "." in cls.__qualname__ or "<" in cls.__qualname__:
        raise PackagingError(f"{cls.__module__}.{cls.__qualname__} is not a module-level class")
    return f"{cls.__module__}.{cls.__qualname__}"


def _bundle_name(name: str | None, cls: type) -> str:
    name = name or cls.__name__.lower()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise PackagingError(f"bundle name {name!r} must be letters, digits, '.', '_' or '-' (no path separators)")
    return name.removesuffix(".zip")


def _add_file(files: dict[str, Path | bytes], arcname: str, source: Path | bytes) -> None:
    if arcname in files:
        raise PackagingError(f"two bundle files would both be stored as {arcname!r}")
    files[arcname] = source


def policy_source_files(cls: type) -> dict[str, Path]:
    """The files that make `cls` importable from a bundle root: {package-relative posix path: source file}.

    Empty for classes in `daf` or in installed packages: those are dependencies, not part of the policy.
    """
    module = sys.modules.get(cls.__module__)
    module_file = getattr(module, "__file__", None)
    if module is None or module_file is None:
        raise PackagingError(f"cannot find the source file of module {cls.__module__!r}")
    parts = module.__name__.split(".")
    path = Path(module_file).absolute()
    if parts[0] == "daf" or is_installed_library(path):
        return {}
    if path.suffix != ".py":
        raise PackagingError(f"module {module.__name__} is {path.name}, not Python source; it cannot be bundled")
    is_package = hasattr(module, "__path__")
    root = path.parent
    for _ in parts[: len(parts) if is_package else len(parts) - 1]:
        root = root.parent
    files: dict[str, Path] = {}
    # Every package level keeps its __init__.py (namespace packages without one are fine as they are).
    for depth in range(1, len(parts) + (1 if is_package else 0)):
        init = root.joinpath(*parts[:depth], "__init__.py")
        if init.is_file():
            files[PurePosixPath(*parts[:depth], "__init__.py").as_posix()] = init
    if not is_package:
        files[PurePosixPath(*parts[:-1], f"{parts[-1]}.py").as_posix()] = path
    return files


# Where a run lived on the training machine: not part of what the bundle's policy is, and a path can say too much.
_MACHINE_PATHS = {"output_dir", "checkpoint_dir"}


def find_training_config(weights: Path) -> dict | None:
    """The training config DAF wrote into the checkpoint these weights belong to (daf.training.checkpoints), without
    the training machine's paths; None for weights DAF did not train. Nothing else near the weights is read: a
    stray `config.json` beside or above them (one held an API token) would travel inside the bundle."""
    checkpoint = checkpoint_holding(weights)
    if checkpoint is None:
        return None
    try:
        config = DAFTrainingConfig.model_validate_json((checkpoint.path / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise PackagingError(f"training config of checkpoint {checkpoint.path} is not valid: {exc}") from None
    out = config.model_dump(mode="json", exclude=_MACHINE_PATHS)
    if out.get("policy_data_path"):
        out["policy_data_path"] = Path(out["policy_data_path"]).name  # the warm start's file name, not its path
    return out


def _relative_checkpoint(weights: Path) -> str:
    """The weights' place within their run (`<run_id>/checkpoints/step_<N>/policy.pt`), or just their file name."""
    checkpoint = checkpoint_holding(weights)
    if checkpoint is None:
        return weights.name
    return PurePosixPath(*weights.parts[-4:]).as_posix()


def _creation_time(created_at: datetime | str | None, checkpoint: str | None) -> tuple[str | None, str]:
    if created_at is not None:
        if isinstance(created_at, str):
            created_at = datetime.fromisoformat(created_at)
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=UTC)
        return _iso(created_at.timestamp()), "argument"
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return _iso(int(epoch)), "SOURCE_DATE_EPOCH"
        except ValueError:
            raise PackagingError(f"SOURCE_DATE_EPOCH={epoch!r} is not an integer") from None
    if checkpoint and Path(checkpoint).exists():
        return _iso(Path(checkpoint).stat().st_mtime), "checkpoint_mtime"
    return None, "none"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat().replace("+00:00", "Z")


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _open_source(source: Path | bytes) -> io.BufferedIOBase:
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def _digest(source: Path | bytes) -> dict[str, Any]:
    sha, size = hashlib.sha256(), 0
    with _open_source(source) as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return {"sha256": sha.hexdigest(), "size": size}


def _zip_info(arcname: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, whatever the host: the mode bits below are then meaningful and fixed
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def _write_zip_atomically(files: dict[str, Path | bytes], target: Path) -> Path:
    with atomic_path(target) as tmp:  # readers see the old bundle or the complete new one, never half a zip
        with zipfile.ZipFile(tmp, "w", compresslevel=6) as zf:
            for arcname in sorted(files):
                with _open_source(files[arcname]) as src, zf.open(_zip_info(arcname), "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    return target


# ---------------------------------------------------------------------------------------------------------------------
# Validating


class _Limits(NamedTuple):
    max_file_bytes: int
    max_total_bytes: int
    max_entries: int


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
        """Record one check: failed when `errors` is non-empty. Returns whether it passed."""
        if errors:
            self.checks.append(Check(name, FAIL, "; ".join(errors)))
            self.errors.extend(f"{name}: {e}" for e in errors)
            return False
        self.checks.append(Check(name, PASS, message))
        return True

    def skip(self, name: str, reason: str) -> None:
        self.checks.append(Check(name, SKIP, reason))

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "ok": self.ok,
            "checks": [c._asdict() for c in self.checks],
            "errors": list(self.errors),
        }


def ensure_valid(report: ValidationReport) -> ValidationReport:
    """Raise PackageValidationError listing every error of a failed report; return it otherwise."""
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
    child process with a time and memory limit (daf.bundle_sandbox, which says what that does and does not
    protect).
    """
    report = ValidationReport(path=str(path))
    root = Path(tempfile.mkdtemp(prefix="daf-validate-"))
    try:
        limits = _Limits(max_file_bytes, max_total_bytes, max_entries)
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
    limits: _Limits,
) -> None:
    extract_errors = _extract_safely(path, root, limits)
    if not report.add("archive", extract_errors, f"{len(_bundle_files(root))} files extracted safely"):
        return
    manifest, manifest_errors = _check_manifest(root)
    report.add("checksums", manifest_errors, "every file matches manifest.json")
    spec_json, spec_errors = _check_policy_spec(root)
    report.add("policy_spec", spec_errors, spec_json.get("class_path", "") if spec_json else "")
    if manifest_errors or spec_errors:
        return
    weights_message, weights_errors = _check_weights(root, spec_json.get("data_path"))
    if not report.add("weights", weights_errors, weights_message):
        return
    named, mission_errors = _manifest_missions(manifest)
    if not report.add("manifest_missions", mission_errors, ", ".join(named) or "none named"):
        return
    for item in run_code_checks(root, list(missions or named or list_missions()[:1]), reward_threshold, eval_episodes):
        if item["skipped"]:
            report.skip(item["name"], item["message"])
        else:
            report.add(item["name"], item["errors"], item["message"])


def _manifest_missions(manifest: dict) -> tuple[list[str], list[str]]:
    """The manifest may only name DAF's missions: a path would make the validator read (and build) a file of its
    own disk the bundle chose, such as a 100000x100000 map."""
    named = manifest.get("missions") or []
    if not isinstance(named, list) or not all(isinstance(m, str) for m in named):
        return [], [f"missions must be a list of mission names, got {type(named).__name__}: {str(named)[:100]!r}"]
    unknown = [m for m in named if m not in list_missions()]
    if unknown:
        return [], [f"unknown mission(s) {unknown[:5]} (a bundle names DAF missions: {', '.join(list_missions())})"]
    return named, []


def _unsafe_entry(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    parts = PurePosixPath(name).parts
    if not name or "\x00" in name:
        return f"empty or NUL-containing entry name {name!r}"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return f"absolute path entry {name!r}"
    if "\\" in name:
        return f"backslash in entry name {name!r}"
    if ".." in parts:
        return f"path traversal entry {name!r}"
    if stat.S_ISLNK(info.external_attr >> 16):
        return f"symlink entry {name!r}"
    if "__pycache__" in parts or name.endswith(COMPILED_SUFFIXES):
        # Compiled code cannot be reviewed, and a .pyc beside an innocent .py runs instead of it.
        return f"compiled code entry {name!r}: bundles carry Python source only"
    if info.flag_bits & 0x1:
        return f"encrypted entry {name!r}"
    return None


def _extract_safely(path: Path, root: Path, limits: _Limits) -> list[str]:
    """Extract into `root`, but only after every entry passed the checks (so a bad zip writes nothing)."""
    if not path.is_file():
        return [f"{path} is not a file"]
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            errors = _entry_errors(infos, limits)
            if errors:
                return errors
            for info in infos:
                _extract_entry(zf, info, root, limits.max_file_bytes)
    except zipfile.BadZipFile as exc:
        return [f"{path} is not a valid zip: {exc}"]
    except (OSError, ValueError, RuntimeError, EOFError) as exc:  # CRC errors and lying size headers land here
        return [f"extraction failed: {exc}"]
    return []


def _entry_errors(infos: list[zipfile.ZipInfo], limits: _Limits) -> list[str]:
    errors: list[str] = []
    if len(infos) > limits.max_entries:
        errors.append(f"{len(infos)} entries, more than the limit of {limits.max_entries}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        problem = _unsafe_entry(info)
        if problem:
            errors.append(problem)
            continue
        normalized = PurePosixPath(info.filename).as_posix()
        if normalized in seen:
            errors.append(f"duplicate entry {info.filename!r}")
        seen.add(normalized)
        if info.file_size > limits.max_file_bytes:
            errors.append(
                f"{info.filename} is {info.file_size} bytes uncompressed, over the {limits.max_file_bytes} limit"
            )
        total += info.file_size
    if total > limits.max_total_bytes:
        errors.append(f"{total} bytes uncompressed in all, over the {limits.max_total_bytes} limit")
    return errors


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, root: Path, max_file_bytes: int) -> None:
    target = root.joinpath(*PurePosixPath(info.filename).parts)
    if not target.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"entry {info.filename!r} escapes the extraction directory")
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    # "xb": never follow or overwrite anything already there; the size is counted, not trusted from the header.
    with zf.open(info) as src, open(target, "xb") as dst:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > max_file_bytes:
                raise ValueError(f"{info.filename} decompresses past the {max_file_bytes}-byte limit")
            dst.write(chunk)


def _bundle_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _check_manifest(root: Path) -> tuple[dict, list[str]]:
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
    present = _bundle_files(root) - {MANIFEST_FILENAME}
    for arcname in sorted(present - set(listed)):
        errors.append(f"{arcname} is in the bundle but not listed in {MANIFEST_FILENAME}")
    for arcname in sorted(set(listed) - present):
        errors.append(f"{arcname} is listed in {MANIFEST_FILENAME} but missing from the bundle")
    for arcname in sorted(present & set(listed)):
        expected = listed[arcname] if isinstance(listed[arcname], dict) else {}
        actual = _digest(root / arcname)
        if actual["size"] != expected.get("size") or actual["sha256"] != expected.get("sha256"):
            errors.append(f"{arcname} does not match its checksum in {MANIFEST_FILENAME} (modified or corrupted)")
    return manifest, errors


def _check_policy_spec(root: Path) -> tuple[dict, list[str]]:
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


def _looks_like_torch(path: Path) -> bool:
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


def _check_weights(root: Path, data_path: str | None) -> tuple[str, list[str]]:
    """Weights must load with torch.load(weights_only=True): this refuses pickles that would run code."""
    if data_path is None:
        return "no weights", []
    path = root / data_path
    if not _looks_like_torch(path):
        return f"{data_path}: not a torch file; left to the policy's loader", []
    problem = unsafe_weights(path)
    if problem:
        return "", [f"{data_path} {problem}"]
    return f"{data_path} loads with weights_only=True", []


def unsafe_weights(path: Path) -> str | None:
    """Why a torch file fails torch.load(weights_only=True) (an unsafe or corrupt pickle), or None when it loads."""
    try:
        read_torch_file(path)
    except UnsafeTorchFile as exc:
        return f"refused by torch.load(weights_only=True) (unsafe or corrupt pickle): {exc}"
    return None
