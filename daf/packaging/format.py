"""The bundle format: what a DAF policy bundle holds, the names it uses, and the checksum record of its files.

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
from pathlib import Path
from typing import Any

MANIFEST_FILENAME = "manifest.json"
BUNDLE_FORMAT = "daf-policy-bundle"
BUNDLE_FORMAT_VERSION = 1
WEIGHTS_DIR = "weights"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest timestamp a zip entry can hold


def open_source(source: Path | bytes) -> io.BufferedIOBase:
    """A bundle file's content, from a file on disk or from bytes built in memory."""
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def digest(source: Path | bytes) -> dict[str, Any]:
    """The manifest's record of one file: {"sha256", "size"}."""
    sha, size = hashlib.sha256(), 0
    with open_source(source) as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return {"sha256": sha.hexdigest(), "size": size}
