"""Extracting an untrusted bundle zip: every entry is checked (names, kinds, sizes, counts) before anything is written.

A bundle comes from elsewhere and is opened by the validator, so its zip is hostile until shown otherwise: a name can
climb out of the extraction directory, an entry can be a symlink or compiled code, and a header can lie about the
size its data decompresses to.
"""

from __future__ import annotations

import re
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from daf.files import zip_directory_size

DEFAULT_MAX_FILE_BYTES = 1 << 30  # 1 GiB per file
DEFAULT_MAX_TOTAL_BYTES = 2 << 30  # 2 GiB uncompressed in all
DEFAULT_MAX_ENTRIES = 10_000
COMPILED_SUFFIXES = (".pyc", ".pyo", ".so", ".pyd", ".dylib", ".dll")
# zipfile builds an object (~500 bytes) for every record of the central directory, which it parses by byte size:
# the directory is bounded before it is parsed. A record is 46 bytes plus its name and extras; 1 KiB on average per
# allowed entry is far above any real bundle's, and bounds parsing to ~(1 KiB / 46) x max_entries objects.
DIRECTORY_BYTES_PER_ENTRY = 1024


class Limits(NamedTuple):
    max_file_bytes: int
    max_total_bytes: int
    max_entries: int


def extract_safely(path: Path, root: Path, limits: Limits) -> list[str]:
    """Extract into `root`, but only after every entry passed the checks (so a bad zip writes nothing). Returns what
    was wrong, empty when the bundle was extracted."""
    if not path.is_file():
        return [f"{path} is not a file"]
    try:
        with open(path, "rb") as fh:
            directory = zip_directory_size(fh)
        if directory is None:
            return [f"{path} is not a valid zip: no end of central directory"]
        entries, directory_bytes = directory
        if entries > limits.max_entries:
            return [f"{entries} entries, more than the limit of {limits.max_entries}"]
        if directory_bytes > DIRECTORY_BYTES_PER_ENTRY * limits.max_entries:
            return [
                f"a {directory_bytes}-byte central directory, more than {DIRECTORY_BYTES_PER_ENTRY} bytes for each "
                f"of the {limits.max_entries} entries allowed"
            ]
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


def bundle_files(root: Path) -> set[str]:
    """The files of an extracted bundle, as posix paths relative to its root."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


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


def _entry_errors(infos: list[zipfile.ZipInfo], limits: Limits) -> list[str]:
    if len(infos) > limits.max_entries:  # the end record may understate what the directory holds
        return [f"{len(infos)} entries, more than the limit of {limits.max_entries}"]
    errors: list[str] = []
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
