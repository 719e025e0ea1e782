"""A run's outputs where people on other machines can open them: a result store named by a URL.

A run always writes its outputs under `output_dir` on the machine it ran on. With `result_store` set, its run
directory (pipeline_result.json, reports, bundle) and the checkpoints it produced are copied to
`<result_store>/<run directory name>/`, where a run on a Docker or Kubernetes worker, or on a colleague's machine,
can be read after its container is gone. Object storage goes through fsspec (s3fs for `s3://`, and the same
interface for `gs://` and `az://`): a well-kept library that already knows each provider's credentials, retries
and multipart uploads. Credentials come from the providers' own environment (AWS_ACCESS_KEY_ID, AWS_PROFILE,
AWS_ENDPOINT_URL_S3, ...) and never from the URL, so no output, log or artifact can carry them.

A browser cannot open `s3://`, and the Prefect UI's page cannot open `file://`: `browser_link` signs an HTTP(S) URL
of a stored file (S3's presigned URL, valid for `LINK_EXPIRY_S`) for the report link in the UI.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from daf.content import path_digest

# File systems a result store may name. fsspec knows many more (http, memory, zip, dask, ...); only these are
# places to keep results, and none runs code or reads a local archive.
STORE_PROTOCOLS = ("file", "s3", "gs", "gcs", "az", "abfs")
# The longest a SigV4 presigned URL may live: the UI's report link works for a week, the stored files for good.
LINK_EXPIRY_S = 7 * 24 * 3600
# Weights and bundles get a `<file>.sha256` beside them: a policy loaded from the store is checked against it.
DIGESTED_SUFFIXES = (".pt", ".zip")


class ResultStoreError(RuntimeError):
    """The result store cannot be reached, read or written; the message names the store and the file."""


def check_store_url(url: str) -> str:
    """The URL as given, if it names a place DAF may keep results; a ValueError saying what is allowed otherwise."""
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("a result store URL must not contain control characters")
    if "::" in url:  # fsspec would chain file systems (zip::, reference::): a store is one place, read directly
        raise ValueError(f"{url!r}: a result store URL is one location, not a chain of file systems (::)")
    parts = urlsplit(url)
    if parts.scheme not in STORE_PROTOCOLS:
        raise ValueError(
            f"{url!r}: a result store is a URL with one of {', '.join(STORE_PROTOCOLS)}, e.g. s3://bucket/prefix"
        )
    if parts.username or parts.password:
        raise ValueError("a result store URL must not carry credentials: they come from the provider's environment")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a result store URL takes no query or fragment")
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"{url!r}: a file:// result store is an absolute path, e.g. file:///srv/daf-results")
    elif not parts.netloc:
        raise ValueError(f"{url!r}: name the bucket or container, e.g. {parts.scheme}://bucket/prefix")
    return url


class ResultStore:
    """One result store; `put` copies local files under a run's folder in it."""

    def __init__(self, url: str):
        self.url = check_store_url(url).rstrip("/")
        self._protocol = urlsplit(self.url).scheme
        try:
            import fsspec

            # fsspec takes a file URL's path as written; a URI from Path.as_uri() escapes spaces and the like (%20).
            location = unquote(urlsplit(self.url).path) if self._protocol == "file" else self.url
            self._fs, self._root = fsspec.core.url_to_fs(location)
        except ImportError as exc:  # the provider's file system is an optional dependency
            raise ResultStoreError(
                f"result_store {self.url}: {exc} (install its file system: pip install 'daf[s3]' for s3://, gcsfs for "
                "gs://, adlfs for az://)"
            ) from None

    def _url(self, path: str) -> str:
        return path if self._protocol == "file" else f"{self._protocol}://{path}"

    def put(self, run_name: str, files: dict[str, str]) -> dict[str, str]:
        """Copy `files` (name in the run's folder -> local path) to `<store>/<run_name>/<name>`; the stored URLs by
        name. A file whose name ends in .pt or .zip gets its sha256 beside it."""
        stored = {}
        for name, local in files.items():
            target = f"{self._root}/{run_name}/{name}"
            try:
                if self._protocol == "file":  # object stores have no folders; a missing bucket must stay an error
                    self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                self._fs.put_file(local, target)
                if name.endswith(DIGESTED_SUFFIXES):
                    self._fs.pipe_file(f"{target}.sha256", f"{path_digest(local)}  {Path(name).name}\n".encode())
            except Exception as exc:  # every provider has its own errors: say which store and file, keep the type
                raise ResultStoreError(
                    f"result_store {self.url}: cannot write {name}: {type(exc).__name__}: {exc}"
                ) from exc
            stored[name] = self._url(target)
        return stored

    def browser_link(self, stored_url: str) -> str:
        """A URL a browser opens from the Prefect UI's page: a signed HTTP(S) URL where the store signs (S3), else
        the file's own location (a file:// store: the UI shows it, a browser on that machine opens it)."""
        try:
            return self._fs.sign(stored_url, expiration=LINK_EXPIRY_S)
        except NotImplementedError:
            return Path(stored_url).as_uri() if self._protocol == "file" else stored_url


def run_files(run_dir: Path, checkpoints: list[str]) -> dict[str, str]:
    """What a run stores: every file under its run directory, and each produced checkpoint's folder (its weights and
    what sits beside them) under `checkpoints/<training run>/<step>/`. Links are not followed."""
    files = {}
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and not path.is_symlink():
            files[path.relative_to(run_dir).as_posix()] = str(path)
    for checkpoint in checkpoints:
        step = Path(checkpoint).parent
        for path in sorted(step.iterdir()):
            if path.is_file() and not path.is_symlink():
                files[f"checkpoints/{step.parent.parent.name}/{step.name}/{path.name}"] = str(path)
    return files
