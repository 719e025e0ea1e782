"""DAF's cached task results on disk: plain JSON, and a record in any other form is never read.

A Prefect result record names its own serializer in its metadata, and Prefect loads it with whatever that says:
`pickle` runs code, and even `json` takes an `object_decoder` (a dotted name it imports) and decodes `__class__`
fields by importing them. The records sit under Prefect's local storage, where anything running as the user can
rewrite them (a bundle's import code did, during validation, and the user's next `daf compare` unpickled its
payload). So DAF's cached tasks write with `DAFJSONSerializer` (json, no object hooks) and keep each record's
metadata (which names the serializer and where the result lies) in `VerifiedLocalStorage`, which hands Prefect
the metadata only after checking, as plain JSON, that it names DAF's serializer and a result file of a bounded size
in Prefect's local storage. Anything else is a cache miss (the task runs again and overwrites it) and a warning
naming the file. Results of any form then load only through json.loads.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from prefect.filesystems import LocalFileSystem
from prefect.serializers import Serializer
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

# The largest cached result DAF reads back: an evaluation of 100,000 episodes with their per-agent rewards is a few
# tens of MB of JSON. A larger file is not DAF's, and is not read into memory.
MAX_RESULT_BYTES = 256 << 20
MAX_METADATA_BYTES = 64 << 10  # a metadata record is a few hundred bytes
METADATA_FOLDER = "daf-cache-records"  # beside the results: Prefect writes a result under the same key

_log = logging.getLogger("daf.results")


class DAFJSONSerializer(Serializer):
    """json.dumps/json.loads and nothing else: DAF's cached results are dicts of plain values."""

    type: Literal["daf-json"] = "daf-json"

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(obj).encode()

    def loads(self, blob: bytes) -> Any:
        return json.loads(blob)


class VerifiedLocalStorage(LocalFileSystem):
    """Local file storage for cache metadata that reads only records naming DAFJSONSerializer and a result file
    of bounded size in `results` (Prefect's local storage)."""

    _block_type_name = "DAF Verified Local Storage"
    results: str

    async def aread_path(self, path: str) -> bytes:
        return self._read_verified(path)

    def read_path(self, path: str, _sync: bool | None = None) -> bytes:  # type: ignore[override]
        # Prefect calls it with `_sync=True` (its async_dispatch switch); the record is small and local either way.
        return self._read_verified(path)

    def _read_verified(self, path: str) -> bytes:
        file = self._resolve_path(path)
        if not file.is_file():
            raise ValueError(f"Path {file} does not exist.")  # Prefect's own wording for a cache miss
        if file.stat().st_size > MAX_METADATA_BYTES:
            return _refuse(file, f"larger than {MAX_METADATA_BYTES} bytes")
        content = file.read_bytes()
        problem = _metadata_problem(content, Path(self.results) / file.name)
        if problem:
            return _refuse(file, problem)
        return content


def verified_storage() -> VerifiedLocalStorage:
    """The metadata storage for DAF's cached results, under Prefect's local storage path as configured now."""
    results = Path(PREFECT_LOCAL_STORAGE_PATH.value()).expanduser().absolute()
    return VerifiedLocalStorage(basepath=str(results / METADATA_FOLDER), results=str(results))


def _metadata_problem(content: bytes, result_file: Path) -> str | None:
    try:
        metadata = json.loads(content)  # plain JSON: no hooks, nothing imported
    except (ValueError, UnicodeDecodeError):
        return "not JSON"
    if not isinstance(metadata, dict):
        return "not a result record's metadata"
    serializer = metadata.get("serializer")
    if serializer != {"type": DAFJSONSerializer().type}:
        return f"not written by DAF's JSON serializer (serializer: {str(serializer)[:80]!r})"
    if metadata.get("storage_key") != str(result_file):
        return f"its result is not at {result_file}"
    try:
        size = result_file.stat().st_size
    except OSError:
        return "its result file is missing"
    if size > MAX_RESULT_BYTES:
        return f"its result file is larger than {MAX_RESULT_BYTES} bytes"
    return None


def _refuse(file: Path, why: str) -> bytes:
    _log.warning("ignored the cached result %s: %s; the task runs again and replaces it", file, why)
    raise ValueError(f"cached result {file} refused: {why}")
