"""Files that crashes and readers never see half-written, and torch files read without running their code.

Every file DAF writes for someone else to read (results, reports, bundles, weights, plots) goes through
`atomic_path`: written under a temporary name in the same directory, flushed to disk, then renamed over the
target, so a reader sees the old file or the complete new one and a crash leaves no torn file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[Path]:
    """A temporary path beside `path` for the caller (or a library: torch.save, savefig, zipfile) to write; on a
    clean exit it is fsynced, given `mode` (mkstemp creates 0600, and these files are meant to be shared) and
    renamed onto `path`; on an error it is removed and `path` is untouched."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:  # the data must be on disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


class UnsafeTorchFile(ValueError):
    """torch.load(weights_only=True) refused the file: corrupt, truncated, or a pickle that would run code."""


def read_torch_file(path: str | os.PathLike[str]) -> Any:
    """torch.load without executing code (weights_only=True), on the CPU. Raises UnsafeTorchFile with the first
    line of torch's reason (torch raises many exception types for bad files, some with pages of text)."""
    import torch  # here, not at import: reading a result or writing a report must not load torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc).strip()
        raise UnsafeTorchFile(text.splitlines()[0][:300] if text else type(exc).__name__) from None
