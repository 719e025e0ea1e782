"""The sandbox of bundle validation contains the whole process tree of a bundle's code: nothing it starts outlives
the validation, its processes together stay under a memory limit, the verdict comes at the time limit whatever it
left running, its output and result are read within limits, and it sees neither the user's environment nor files.

Every test runs the real validator on real hostile bundles; where the validator's own memory or time is measured it
runs in a subprocess of its own. Processes a bundle starts carry a per-test marker (in their command line, or as
their name) so the test can look for survivors in /proc.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from mettagrid.policy.policy import PolicySpec
from mettagrid.policy.submission import POLICY_SPEC_FILENAME

from daf.packaging import build_package, validate_package
from daf.packaging._containment import PASSED_VARIABLES, SWITCH_VARIABLE, TOKEN_VARIABLE, namespace_support

MISSION = "training_facility_1"
MiB, GiB = 1 << 20, 1 << 30
# What validating a hostile bundle may add to the validator's peak resident memory (its imports, torch and mettagrid,
# take ~350 MiB here; it measured +0-10 MiB): buffering the child's output or parsing its result would add GiBs.
VALIDATION_PEAK_BOUND = 64 * MiB

POLICY_MODULE = """
import os, sys, time
MARKER = {marker!r}
{code}
from daf.policies.scripted import RandomPolicy


class Policy(RandomPolicy):
    pass
"""

# A survivor, daemon-style: a new session, a double fork, its output detached, then exec (its marker in its command
# line). The bundle's import goes on once the survivor runs (it says so through a pipe): there is something to contain.
SURVIVOR = """
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.close(r)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.set_inheritable(w, True)
        code = "import os, sys, time; os.write(int(sys.argv[1]), b'x'); os.close(int(sys.argv[1])); time.sleep(600)"
        os.execv(sys.executable, [sys.executable, "-c", code, str(w), MARKER])
    os._exit(0)
os.close(w)
os.read(r, 1)
os.close(r)
"""


@pytest.fixture(autouse=True)
def _scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()


@pytest.fixture
def marker() -> object:
    """A name for the processes a test's bundle starts (15 characters: it fits a process name); any left at the
    end are killed, so a failing test leaves nothing behind."""
    name = f"daf{uuid.uuid4().hex[:12]}"
    yield name
    for pid in _alive(name):
        os.kill(pid, signal.SIGKILL)


def _alive(marker: str) -> list[int]:
    """Live (not zombie) processes with `marker` in their command line or name."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            comm = (entry / "comm").read_text().strip()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and (marker.encode() in cmdline or comm == marker):
            found.append(int(entry.name))
    return found


def _module(marker: str, code: str) -> str:
    return POLICY_MODULE.format(marker=marker, code=code)


def _bundle(tmp_path: Path, module: str) -> Path:
    """A bundle of evil.Policy with a consistent manifest: only its code is hostile."""
    spec = {"class_path": "evil.Policy", "data_path": None, "setup_script": None, "init_kwargs": {}}
    entries = {POLICY_SPEC_FILENAME: json.dumps(spec).encode(), "evil/__init__.py": module.encode()}
    digests = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in entries.items()}
    manifest = {"format": "daf-policy-bundle", "format_version": 1, "missions": [MISSION], "files": digests}
    path = tmp_path / f"hostile-{uuid.uuid4().hex[:8]}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in {**entries, "manifest.json": json.dumps(manifest).encode()}.items():
            zf.writestr(name, data)
    return path


def _root(tmp_path: Path, module: str) -> Path:
    """The same, extracted: for run_code_checks directly."""
    root = tmp_path / f"root-{uuid.uuid4().hex[:8]}"
    (root / "evil").mkdir(parents=True)
    (root / "evil" / "__init__.py").write_text(module)
    (root / POLICY_SPEC_FILENAME).write_text(json.dumps({"class_path": "evil.Policy", "data_path": None}))
    return root


def _containment(checks: list[dict]) -> str:
    (item,) = [c for c in checks if c["name"] == "containment"]
    assert item.get("status", "pass") == "pass" and not item.get("errors")
    return item["message"]


def _errors(checks: list[dict]) -> str:
    return "\n".join(f"{c['name']}: {c.get('message', '')} {c.get('errors', '')}" for c in checks)


DRIVER = """
import json, resource, sys, time
from pathlib import Path

job = json.loads(sys.argv[1])
import tempfile
tempfile.tempdir = job["tempdir"]  # the validation's scratch in the test's directory
if job.get("address_space"):
    resource.setrlimit(resource.RLIMIT_AS, (job["address_space"], job["address_space"]))
import daf.packaging.sandbox as sandbox
from daf.packaging import validate_package

try:
    from daf.packaging._containment import namespace_support
    namespace_support()  # probed once per process: not part of what is timed
except ImportError:
    pass
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the validator's imports: torch, mettagrid
runs = []
for run in job["runs"]:
    started = time.monotonic()
    if "bundle" in run:
        report = validate_package(run["bundle"]).to_dict()
        ok, checks = report["ok"], report["checks"]
    else:
        ok, checks = None, sandbox.run_code_checks(Path(run["root"]), ["training_facility_1"], None, 1, **run["limits"])
    runs.append({"ok": ok, "checks": checks, "elapsed": time.monotonic() - started})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("RESULT " + json.dumps({"runs": runs, "peak": peak, "added": peak - before}))
"""


def _drive(job: dict, *, timeout: float, prefix: list[str] | None = None) -> dict:
    """The validator in a process of its own (its peak memory measured), with a time limit of the test's."""
    out = subprocess.run(
        [*(prefix or []), sys.executable, "-c", DRIVER, json.dumps({**job, "tempdir": tempfile.gettempdir()})],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


# ---------------------------------------------------------------------------------------------------------- processes


@pytest.mark.parametrize("namespaces", ["auto", "off"])
def test_a_double_forked_setsid_survivor_does_not_outlive_validation(
    tmp_path: Path, marker: str, namespaces: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if namespaces == "off":
        monkeypatch.setenv(SWITCH_VARIABLE, "0")  # the fallback: own session, child subreaper, token sweep
    elif not namespace_support()[0]:
        pytest.skip(f"no namespaces here: {namespace_support()[1]}")
    report = validate_package(_bundle(tmp_path, _module(marker, SURVIVOR)))
    checks = [c._asdict() for c in report.checks]
    assert report.ok, report.to_dict()  # a "valid" bundle: its survivor ran during validation, and ...
    assert _alive(marker) == []  # ... nothing of it runs after
    expected = "no namespaces (" if namespaces == "off" else "own user, PID, network, IPC and mount namespaces"
    assert expected in _containment(checks)


def test_nothing_outlives_a_validator_killed_mid_validation(tmp_path: Path, marker: str) -> None:
    if not namespace_support()[0]:
        pytest.skip(f"no namespaces here: {namespace_support()[1]}")  # without them a detached survivor stays
    root = _root(tmp_path, _module(marker, SURVIVOR + "time.sleep(600)\n"))
    job = {"runs": [{"root": str(root), "limits": {"timeout_s": 600}}], "tempdir": tempfile.gettempdir()}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(job)], stdout=subprocess.DEVNULL, cwd="/")
    try:
        deadline = time.monotonic() + 60
        while not _alive(marker):  # the bundle's survivor runs: the validation is under way
            assert time.monotonic() < deadline and driver.poll() is None
            time.sleep(0.1)
    finally:
        driver.kill()  # no cleanup of its own: SIGKILL
        driver.wait()
    deadline = time.monotonic() + 5
    while _alive(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(marker) == []


@pytest.mark.parametrize("namespaces", ["auto", "off"])
def test_output_held_open_by_a_grandchild_does_not_delay_the_verdict(
    tmp_path: Path, marker: str, namespaces: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if namespaces == "off":
        monkeypatch.setenv(SWITCH_VARIABLE, "0")  # the driver inherits it
    # The grandchild keeps the child's stdout open and sleeps 600 s; the child exits at once, or hangs.
    holder = "os.fork() or os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)', MARKER])"
    exits = _root(tmp_path, _module(marker, f"{holder}\nos._exit(0)"))
    hangs = _root(tmp_path, _module(marker, f"{holder}\ntime.sleep(600)"))
    job = {
        "runs": [{"root": str(exits), "limits": {"timeout_s": 20}}, {"root": str(hangs), "limits": {"timeout_s": 5}}]
    }
    exited, hung = _drive(job, timeout=90)["runs"]
    assert exited["elapsed"] < 10, exited
    assert "before it reported" in _errors(exited["checks"])
    assert hung["elapsed"] < 5 + 3, hung  # the time limit, plus a few seconds at most
    assert "did not finish within 5 s; killed" in _errors(hung["checks"])
    assert _alive(marker) == []


def test_memory_is_limited_for_the_process_tree_as_a_whole(tmp_path: Path, marker: str) -> None:
    # Five forks of 400 MB each: every one under any per-process limit, 2 GB together (plus the child itself).
    code = """
import ctypes
for _ in range(5):
    if os.fork() == 0:
        ctypes.CDLL(None).prctl(15, MARKER.encode(), 0, 0, 0)  # PR_SET_NAME: the test finds it by name
        block = bytearray(400 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(600)
time.sleep(600)
"""
    root = _root(tmp_path, _module(marker, code))
    job = {"runs": [{"root": str(root), "limits": {"timeout_s": 60, "memory_bytes": int(1.5 * GiB)}}]}
    result = _drive(job, timeout=90)
    (run,) = result["runs"]
    assert "memory limit exceeded" in _errors(run["checks"]) and "over the 1.5 GiB limit; killed" in _errors(
        run["checks"]
    )
    assert run["elapsed"] < 30
    assert _alive(marker) == []
    assert result["added"] < VALIDATION_PEAK_BOUND, result


def test_a_valid_bundle_validates_under_a_lower_hard_address_space_limit(tmp_path: Path) -> None:
    bundle = build_package(PolicySpec(class_path="baseline"), tmp_path / "out", name="base", missions=[MISSION])
    # Raising a hard limit takes CAP_SYS_RESOURCE, which ordinary users (and many containers) do not have: where
    # these tests run as root, drop it, as the host would not give it.
    prefix = []
    if os.geteuid() == 0 and shutil.which("setpriv"):
        prefix = ["setpriv", "--inh-caps=-sys_resource", "--bounding-set=-sys_resource"]
    job = {"runs": [{"bundle": str(bundle)}], "address_space": 6 * GiB}
    (run,) = _drive(job, timeout=120, prefix=prefix)["runs"]
    assert run["ok"], run["checks"]
    assert "6.0 GiB address space (clamped from 8.0 GiB: the host's hard limit)" in _containment(run["checks"])


# ------------------------------------------------------------------------------------------------- output and result


def test_huge_output_and_a_forged_huge_result_are_refused_with_bounded_memory(tmp_path: Path, marker: str) -> None:
    # 1 GiB printed, then a 200 MB result file that claims every check passed, written where the request says.
    code = """
import json
chunk = "x" * (1 << 20)
try:
    for _ in range(1024):
        sys.stdout.write(chunk)
    sys.stdout.flush()
except OSError:
    pass
result = json.load(open(sys.argv[1]))["result"]
check = json.dumps({"name": "forged", "errors": [], "message": "y" * (1 << 20), "skipped": False})
try:
    with open(result, "w") as f:
        f.write("[" + ",".join([check] * 200) + "]")
except OSError:
    pass
os._exit(0)
"""
    job = {"runs": [{"bundle": str(_bundle(tmp_path, _module(marker, code)))}]}
    result = _drive(job, timeout=120)
    (run,) = result["runs"]
    assert run["ok"] is False
    assert "sandbox" in [c["name"] for c in run["checks"] if c["status"] == "fail"]
    assert "the result file has" in _errors(run["checks"]) and "not read" in _errors(run["checks"])
    assert result["added"] < VALIDATION_PEAK_BOUND, result


def test_a_malformed_result_is_a_failed_check_not_an_exception(tmp_path: Path) -> None:
    from daf.packaging.sandbox import RESULT_LIMIT_BYTES, _read_result

    def verdict(content: object) -> str:
        path = tmp_path / "result.json"
        if path.exists() or path.is_symlink():
            path.unlink()
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(json.dumps(content))
        (item,) = _read_result(path, 0, "")
        assert item["name"] == "sandbox" and item["errors"], item
        return item["errors"][0]

    good = {"name": "x", "errors": [], "message": "", "skipped": False}
    assert "malformed" in verdict(b"[{")
    assert "not a list" in verdict({"name": "x"})
    assert "not a list" in verdict([])
    assert "not a list" in verdict([good] * 1000)
    assert "wrong types" in verdict([{**good, "errors": [1]}])
    assert "wrong types" in verdict([{**good, "skipped": "no"}])
    assert "is not a {name, errors, message, skipped} object" in verdict([{**good, "extra": 1}])
    assert "only the validator reports" in verdict([{**good, "name": "containment"}])
    assert "not read" in verdict(b" " * (RESULT_LIMIT_BYTES + 1))
    assert "malformed" in verdict(b"[" * 100_000)  # nesting deep enough to exhaust the parser's recursion
    # Not a regular file: a FIFO would block a plain read forever, a symlink could point anywhere.
    path = tmp_path / "result.json"
    path.unlink()
    os.mkfifo(path)
    assert "not a regular file" in _read_result(path, 0, "")[0]["errors"][0]
    path.unlink()
    path.symlink_to("/etc/passwd")
    assert "cannot be opened" in _read_result(path, 0, "")[0]["errors"][0]
    # In shape: long texts cut, control characters (terminal escapes) replaced.
    path.unlink()
    path.write_text(json.dumps([{**good, "message": "\x1b[2J" + "z" * 20_000, "errors": ["e"] * 1010}]))
    (item,) = _read_result(path, 0, "")
    assert item["message"].endswith("... (10004 more characters)") and "\x1b" not in item["message"]
    assert len(item["errors"]) == 1001 and item["errors"][-1] == "... and 10 more"


# ---------------------------------------------------------------------------------------------- environment and files


def test_the_child_sees_no_credentials_and_not_the_users_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("[default]\n")
    prefect_home = tmp_path / "prefect"
    record = prefect_home / "storage" / "cached-result"
    record.parent.mkdir(parents=True)
    record.write_text("original")
    secrets = {"AWS_SECRET_ACCESS_KEY": "s3cr3t", "WANDB_API_KEY": "k", "GITHUB_TOKEN": "t", "DB_PASSWORD": "p",
               "PREFECT_API_URL": "http://prefect", "MY_SERVICE_SECRET": "x"}  # fmt: skip
    for name, value in {**secrets, "HOME": str(home), "PREFECT_HOME": str(prefect_home)}.items():
        monkeypatch.setenv(name, value)
    allowed = [*PASSED_VARIABLES, "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "PYTHONUSERBASE", TOKEN_VARIABLE]
    code = f"""
import json
try:
    with open({str(record)!r}, "w") as f:
        f.write("rewritten by the bundle")
except OSError:
    pass
# What the process was started with (os.environ also holds what the child's own imports set since).
initial = [entry.partition("=")[0] for entry in open("/proc/self/environ").read().split("\\0") if entry]
seen = {{"home": os.environ.get("HOME"), "credentials": os.path.exists({str(home / ".aws" / "credentials")!r}),
         "record": os.path.exists({str(record)!r}),
         "unexpected": sorted(k for k in initial if k not in {allowed!r} and not k.startswith("LC_"))[:8]}}
raise RuntimeError("SEEN" + json.dumps(seen))
"""
    report = validate_package(_bundle(tmp_path, _module("unused", code)))
    (error,) = [e for e in report.errors if "SEEN" in e]
    seen = json.loads(error.partition("SEEN")[2])
    assert seen["unexpected"] == []  # an allow-list: nothing of the parent's environment but what Python needs
    assert seen["home"] != str(home) and not Path(seen["home"]).exists()  # its own, gone with the validation
    if namespace_support()[0]:
        assert not seen["credentials"] and not seen["record"]  # hidden: not even a path to rewrite
        assert record.read_text() == "original"
