"""Content digests of what a computation reads, for cache keys: a cached result may be reused only when every
input is the same to the byte, whatever its path, mtime or name says.

- files and directories: their bytes, read every time (a memo keyed on path, size and mtime missed a weights file
  replaced by another of the same size and mtime);
- missions: the resolved mettagrid config, so an edited mission YAML at the same path is a new input;
- policy classes: the source of the package that defines them when it is the user's own code (an edited custom
  policy is a new input), the distribution's name and version when it is an installed library;
- DAF itself: the source of its packages, so an edited checkout never reuses results of the old code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import site
import subprocess
import sys
import sysconfig
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any

import daf

# DAF's import name; its packages (the domain core, and the Prefect tasks and flows installed from the repository's
# tasks/ and flows/ folders as daf.tasks and daf.flows) are what daf_source_digest() covers.
DAF_PACKAGE = "daf"
_SOURCE_PACKAGES = ("daf", "daf.tasks", "daf.flows")
_SOURCE_SUFFIXES = (".py", ".j2", ".json", ".yaml")
_CHUNK = 1 << 20


def _update_with_file(h: Any, path: Path) -> None:
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)


def _tree_files(root: Path, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if suffixes is None or name.endswith(suffixes):
                files.append(Path(dirpath) / name)
    return files


def _digest_tree(root: Path, suffixes: tuple[str, ...] | None = None) -> str:
    h = hashlib.sha256()
    for path in _tree_files(root, suffixes):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        _update_with_file(h, path)
        h.update(b"\0")
    return h.hexdigest()


def path_digest(path: str | os.PathLike[str] | None) -> str | None:
    """sha256 of a file's bytes, or of a directory's relative paths and bytes; None for no path."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        return "dir:" + _digest_tree(p)
    if not p.is_file():
        return f"missing:{p}"
    h = hashlib.sha256()
    _update_with_file(h, p)
    return h.hexdigest()


def mission_digest(mission: str) -> str:
    """sha256 of the mission's resolved mettagrid config (a name or a YAML file, read now)."""
    from daf.missions import get_mission

    resolved = get_mission(mission).model_dump(mode="json")
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()


@cache
def daf_source_digest() -> str:
    """sha256 of DAF's own source (its packages' code and templates). Once per process: the code that runs is
    the code this process imported."""
    h = hashlib.sha256()
    for package in _SOURCE_PACKAGES:
        # Located, not imported: the core must not load the Prefect layers to digest their files.
        root = Path(next(iter(importlib.util.find_spec(package).submodule_search_locations)))
        h.update(f"{package}:{_digest_tree(root, _SOURCE_SUFFIXES)}".encode())
    return h.hexdigest()


@cache
def daf_source() -> dict[str, str | None]:
    """Which DAF produced a result: the git commit of the checkout DAF runs from (`+` when it has uncommitted changes;
    None outside a checkout, e.g. a wheel), and always the digest of the source that actually ran."""
    root = Path(daf.__file__).resolve().parent.parent
    commit = None
    if (root / ".git").exists():
        try:
            head = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            )
            changes = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            if head.returncode == 0:
                commit = head.stdout.strip() + ("+" if changes.stdout.strip() else "")
        except (OSError, subprocess.TimeoutExpired):  # no git on this machine: the digest still names the source
            pass
    return {"git_commit": commit, "source_digest": daf_source_digest()}


def installed_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """What produced a result: DAF's and Python's versions and those of the named distributions (None: absent)."""
    found: dict[str, str | None] = {"daf": daf.__version__}
    found.update({name: _version_or_none(name) for name in packages})
    found["python"] = platform.python_version()
    return found


def _version_or_none(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


@cache
def _distributions_of(top_level: str) -> tuple[str, ...]:
    # Scanning every installed distribution's metadata costs ~0.1 s; what is installed is fixed for a process.
    return tuple(packages_distributions().get(top_level, ()))


def is_installed_library(path: Path) -> bool:
    """Whether `path` lies in this interpreter's installed code (site-packages, the standard library, user site)
    rather than in a user's own source tree."""
    resolved = path.resolve()
    roots = {sysconfig.get_path(key) for key in ("purelib", "platlib", "stdlib", "platstdlib")}
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    return any(root and resolved.is_relative_to(Path(root).resolve()) for root in roots)


def policy_source_digest(class_path: str) -> str:
    """What defines a policy class's behaviour besides its weights: DAF's source for DAF's policies, the version
    of an installed library, or the source of the user's own package (every module of its top-level package,
    which is what the class may import)."""
    from daf.policies.registry import load_policy_class

    top = load_policy_class(class_path).__module__.split(".")[0]
    if top == DAF_PACKAGE:
        return f"daf:{daf_source_digest()}"
    module = sys.modules[top]
    if getattr(module, "__file__", None):
        location = Path(module.__file__).resolve()
        root = location.parent if location.name == "__init__.py" else location
    else:  # a namespace package
        root = Path(next(iter(module.__path__))).resolve()
    if is_installed_library(root):
        distributions = _distributions_of(top)
        if distributions:
            return "lib:" + ",".join(sorted(f"{d}=={version(d)}" for d in distributions))
    return "src:" + (_digest_tree(root, (".py",)) if root.is_dir() else path_digest(root))
