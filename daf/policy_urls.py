"""Policy weights named by a URL (`PolicySpec(data_path="s3://...")`, `policy_data_path`): fetched into a
content-addressed folder under output_dir and checked against their recorded sha256 before anything loads them.

The digest a fetched file must have is recorded with it: DAF's result store writes `<weights>.sha256` beside every
`.pt` and `.zip` it stores (daf.result_store); weights put there another way carry it in the URL,
`s3://bucket/policy.pt#sha256=<hex>`. A URL with neither is refused: unverified bytes are never loaded, and a
file replaced in the bucket after it was recorded is caught before compute. Every consumer of a data_path (the
environment checks, evaluation, training's warm start, packaging) then reads an ordinary local file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from daf.config import DAFConfig
from daf.content import path_digest
from daf.result_store import STORE_PROTOCOLS, ResultStoreError, check_store_url

C = TypeVar("C", bound=DAFConfig)

# Weights far beyond any policy DAF trains: a wrong URL (a data set, a disk image) fails before it fills the disk.
MAX_FETCH_BYTES = 16 * 2**30
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def is_url(data_path: str | None) -> bool:
    """A data_path naming remote storage (s3://, gs://, ...) rather than a local file."""
    return bool(data_path) and urlsplit(data_path).scheme in set(STORE_PROTOCOLS) - {"file"}


def weight_urls(config: DAFConfig) -> list[str]:
    """The weights URLs a pipeline config names: its policy_data_path, or its policies' data_path."""
    paths = [getattr(config, "policy_data_path", None)]
    paths += [entry.data_path for entry in getattr(config, "policies", [])]
    return list(dict.fromkeys(p for p in paths if is_url(p)))


def localized(config: C, fetched: dict[str, str]) -> C:
    """`config` with each URL in `fetched` replaced by its local copy."""
    update = {}
    if getattr(config, "policy_data_path", None) in fetched:
        update["policy_data_path"] = fetched[config.policy_data_path]
    if any(entry.data_path in fetched for entry in getattr(config, "policies", [])):
        update["policies"] = [
            entry.model_copy(update={"data_path": fetched.get(entry.data_path, entry.data_path)})
            for entry in config.policies
        ]
    return config.model_copy(update=update)


def fetch_verified(url: str, cache_dir: Path) -> str:
    """The local path of the weights at `url`, fetched into `<cache_dir>/<sha256>/` (once: a later fetch of the same
    content reuses it) and equal to their recorded sha256; ResultStoreError otherwise."""
    import fsspec

    location, _, fragment = url.partition("#")
    check_store_url(location)
    try:
        fs, path = fsspec.core.url_to_fs(location)
        expected = _recorded_digest(fs, path, url, fragment)
        name = Path(path).name
        if name in ("", ".", ".."):
            raise ResultStoreError(f"{url}: does not name a file")
        target = cache_dir / expected / name
        if target.is_file() and path_digest(target) == expected:
            return str(target)
        size = fs.size(path)  # None where a file system cannot tell before reading
        if size is not None and size > MAX_FETCH_BYTES:
            raise ResultStoreError(f"{url}: {size} bytes, more than the {MAX_FETCH_BYTES} a policy's weights may have")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".fetching-")
        os.close(fd)
        try:
            fs.get_file(path, partial)
            actual = path_digest(partial)
            if actual != expected:
                raise ResultStoreError(
                    f"{url}: sha256 {actual} is not the recorded {expected}: the file changed after it was recorded"
                )
            os.replace(partial, target)  # whole or not at all: a reader never sees a partial file
        finally:
            Path(partial).unlink(missing_ok=True)
    except ResultStoreError:
        raise
    except FileNotFoundError as exc:
        raise ResultStoreError(f"{url}: not found ({exc})") from exc
    except Exception as exc:  # every provider has its own errors: name the URL, keep the type
        raise ResultStoreError(f"{url}: cannot fetch: {type(exc).__name__}: {exc}") from exc
    return str(target)


def _recorded_digest(fs, path: str, url: str, fragment: str) -> str:
    if fragment:
        digest = fragment.removeprefix("sha256=").lower()
        if not fragment.startswith("sha256=") or not _DIGEST.match(digest):
            raise ResultStoreError(f"{url}: the fragment must be #sha256=<64 hex digits>")
        return digest
    try:
        # The store writes `<hex>  <name>`; a sidecar is a line, never a file to read whole.
        with fs.open(f"{path}.sha256", "rb") as fh:
            recorded = fh.read(256).decode("ascii", "replace").split()
    except FileNotFoundError:
        raise ResultStoreError(
            f"{url}: no recorded sha256 ({url}.sha256, which DAF's result store writes beside the weights it stores): "
            "add #sha256=<hex> to the URL"
        ) from None
    if not recorded or not _DIGEST.match(recorded[0].lower()):
        raise ResultStoreError(f"{url}.sha256 does not hold a sha256")
    return recorded[0].lower()
