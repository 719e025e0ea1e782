"""Building a bundle: collect the policy's files and provenance, and write them as a deterministic zip.

What goes in and how the bytes are fixed is the bundle format (daf.packaging.format).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from mettagrid.policy.policy import PolicySpec
from mettagrid.policy.submission import POLICY_SPEC_FILENAME

from daf.config import DAFTrainingConfig
from daf.content import installed_versions, is_installed_library
from daf.errors import InputError
from daf.files import atomic_path
from daf.jsonable import to_jsonable
from daf.missions import get_mission
from daf.packaging.format import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    MANIFEST_FILENAME,
    WEIGHTS_DIR,
    ZIP_EPOCH,
    digest,
    open_source,
)
from daf.policies.hosted import HOSTED_CLASS_PATH, hosted_spec
from daf.policies.registry import check_spec, load_policy_class
from daf.torch_files import refused_data_file
from daf.training.checkpoints import CONFIG_FILE, checkpoint_holding


class PackagingError(InputError, ValueError):
    """The inputs cannot be turned into a bundle (the message says which and why)."""


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
    # A plain policy's DAF-trained weights ship as DAF loads them: through the network adapter, with the plain
    # class's source in the bundle and its defining path among the adapter's init kwargs (daf.policies.hosted).
    policy_spec = hosted_spec(policy_spec)
    cls = check_spec(policy_spec)
    class_path = _canonical_class_path(cls)
    policy_cls = cls
    if class_path == HOSTED_CLASS_PATH:
        policy_cls = load_policy_class(policy_spec.init_kwargs["policy_class_path"])
        _canonical_class_path(policy_cls)  # the bundled class, too, must be a module-level class outside __main__
    name = _bundle_name(name, policy_cls)
    missions = list(missions or [])
    for mission in missions:
        get_mission(mission)  # unknown names fail here, not when the bundle is validated elsewhere

    files: dict[str, Path | bytes] = dict(policy_source_files(policy_cls))
    data_arcname = None
    if policy_spec.data_path:
        data_file = Path(policy_spec.data_path)
        if not data_file.is_file():
            raise PackagingError(f"data_path {data_file} is not a file (only single-file weights can be bundled)")
        if problem := refused_data_file(data_file):
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
        "files": {arc: digest(src) for arc, src in sorted(files.items())},
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

    That is the class's module, the __init__.py of every package above it, and every other module of its top-level
    package that is loaded now (importing the class loaded what it and those __init__ files import: a sibling
    module left out would fail the bundle's import). Empty for classes in `daf` or in installed packages: those
    are dependencies, not part of the policy.
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
    for name, loaded in list(sys.modules.items()):
        source = Path(getattr(loaded, "__file__", None) or "/").absolute()
        if name.split(".")[0] == parts[0] and source.suffix == ".py" and source.is_relative_to(root / parts[0]):
            files.setdefault(source.relative_to(root).as_posix(), source)
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
                with open_source(files[arcname]) as src, zf.open(_zip_info(arcname), "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    return target
