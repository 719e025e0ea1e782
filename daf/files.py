"""Files that crashes and readers never see half-written, and the size of a zip's directory before it is parsed.

Every file DAF writes for someone else to read (results, reports, bundles, weights, plots) goes through
`atomic_path`: written under a temporary name in the same directory, flushed to disk, then renamed over the
target, so a reader sees the old file or the complete new one and a crash leaves no torn file behind.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


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


def zip_directory_size(fh: BinaryIO) -> tuple[int, int] | None:
    """(entries, central directory bytes) as a zip's end record declares them (zip64 included), or None when it has
    none: what parsing the directory would cost, known before zipfile builds an object per entry. zipfile parses
    the directory by its byte size, not its entry count, so a caller bounds both."""
    end = zipfile._EndRecData(fh)  # zipfile's own reader of the end record; private but unchanged since Python 2
    if end is None:
        return None
    return end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
