"""How daf.packaging.sandbox contains the child process that runs a bundle's code: the parent's side (choosing the
containment, the child's command, environment and mount plan, watching and killing its process tree, reading what
it left behind with limits) and the child's side (`enter`: its own limits, mounts and capabilities, applied before
any bundle code runs).

Standard library only: `python -I -S _containment.py --probe DIR` runs this file alone, inside fresh namespaces,
to learn once per process whether this host lets the real child set itself up the same way.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import resource
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SWITCH_VARIABLE = "DAF_SANDBOX_NAMESPACES"  # "0": never use namespaces (the fallback), e.g. to test it
TOKEN_VARIABLE = "DAF_SANDBOX_TOKEN"  # a random value per validation, in every sandbox process's initial environment
PROBE_TIMEOUT_S = 20.0
POLL_S = 0.1  # how often the parent checks the child's processes and their memory
# The tmpfs mounts of the namespaces, bounded in bytes and files (a tmpfs's files are memory no process's counts):
HIDDEN_TMPFS = "size=16m,nr_inodes=4096,mode=0755"  # over each hidden directory: what is written there is discarded
SCRATCH_TMPFS = "size=64m,nr_inodes=16384,mode=0700"  # the child's HOME and TMPDIR: gone with it, nothing to clean
SHM_TMPFS = "size=64m,nr_inodes=4096,mode=1777"  # a private /dev/shm: POSIX shared memory not shared with the host

# The child's environment is built from this allow-list (plus LC_*), never by removing known secrets from the parent's.
PASSED_VARIABLES = (
    "PATH", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
    "METTAGRID_LOG_LEVEL", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)  # fmt: skip
PASSED_PREFIXES = ("LC_",)

# <linux/prctl.h>, <linux/capability.h>, <sys/mount.h>
PR_CAPBSET_READ, PR_CAPBSET_DROP = 23, 24
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 36, 38, 47, 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
# statvfs's f_flag bit -> mount flag: a bind remount in a user namespace must keep the flags the kernel locked.
_LOCKED_FLAGS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME,
                 4096: MS_RELATIME}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Parent side: which containment, and the child's command and environment


def namespace_support() -> tuple[bool, str]:
    """Whether the child can run in its own user, PID, network, IPC and mount namespaces, and why not if it cannot.
    Probed once per process (a real child sets up hidden directories and drops its capabilities); the environment
    switch is read on every call."""
    if os.environ.get(SWITCH_VARIABLE, "").strip() == "0":
        return False, f"{SWITCH_VARIABLE}=0"
    return _probe()


@functools.cache
def _probe() -> tuple[bool, str]:
    if not sys.platform.startswith("linux"):
        return False, f"not Linux ({sys.platform})"
    if _unshare() is None:
        return False, "util-linux's unshare is not installed"
    with tempfile.TemporaryDirectory(prefix="daf-sandbox-probe-", ignore_cleanup_errors=True) as scratch:
        hidden = Path(scratch) / "hidden"
        (hidden / "kept").mkdir(parents=True)
        (hidden / "secret").write_text("")
        (hidden / "kept" / "file").write_text("")
        command = [*namespace_prefix(), sys.executable, "-I", "-S", os.path.abspath(__file__), "--probe", scratch]
        try:
            run = subprocess.run(
                command, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_S, env=_minimal_env()
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return False, f"probe failed: {type(exc).__name__}: {exc}"
    if run.returncode == 0 and run.stdout.strip() == b"ok":
        return True, ""
    from daf.text import printable  # here: the probe runs this file alone, where only the standard library is

    lines = (run.stderr or run.stdout).decode(errors="replace").strip().splitlines()
    return False, f"probe failed (exit code {run.returncode}): {printable(lines[-1] if lines else '', keep='')[:300]}"


@functools.cache
def _unshare() -> str | None:
    return shutil.which("unshare")


def namespace_prefix() -> list[str]:
    """util-linux's unshare: the command after it runs as PID 1 of a new PID namespace (the kernel kills every
    process of the namespace when it ends: nothing the bundle starts outlives it), as root of a new user namespace
    mapped to this user (so it may mount, until `enter` drops that), without network (only a down loopback),
    with its own System V IPC and its own mounts (a fresh /proc)."""
    unshare = _unshare() or "unshare"
    return [unshare, "--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--ipc",
            "--"]  # fmt: skip


def child_command(command: list[str], namespaces: bool) -> list[str]:
    """`command` in namespaces or not, and killed (SIGKILL, by the kernel) if the validator dies first: without
    that, a validator killed mid-validation would leave the child running without a time limit."""
    return [*_pdeathsig_prefix(), *(namespace_prefix() if namespaces else []), *command]


@functools.cache
def _pdeathsig_prefix() -> tuple[str, ...]:
    setpriv = shutil.which("setpriv")  # util-linux 2.33 or later has --pdeathsig
    if setpriv is None:
        return ()
    prefix = (setpriv, "--pdeathsig", "KILL", "--")
    try:
        run = subprocess.run([*prefix, sys.executable, "-I", "-S", "-c", ""], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    return prefix if run.returncode == 0 else ()


def _minimal_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ("PATH", "LANG") or k.startswith(PASSED_PREFIXES)}


def child_environment(home: Path, tmp: Path, token: str) -> dict[str, str]:
    """What the child needs from the parent's environment (an allow-list: no PREFECT_*, no credentials), with a fresh
    empty HOME and TMPDIR of its own."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_VARIABLES or k.startswith(PASSED_PREFIXES)}
    env.update({"HOME": str(home), "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1", TOKEN_VARIABLE: token})
    user_base = _user_base()
    if user_base:  # packages installed with `pip --user` stay importable with another HOME
        env["PYTHONUSERBASE"] = user_base
    return env


def _user_base() -> str | None:
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    return site.getuserbase() if user_site and user_site in sys.path else None


def mount_plan(read_only: Iterable[Path], writable: Iterable[Path], scratch: Iterable[Path]) -> dict[str, list[str]]:
    """The directories the child hides behind an empty tmpfs (the user's home, Prefect's home and storage, runtime
    and temporary directories), the ones it keeps visible but read-only (Python, its packages, DAF, and
    `read_only`: the extracted bundle), the ones it must write (`writable`: its work directory; these last two are
    bound back inside hidden ones), and `scratch`, a tmpfs of its own (its HOME and TMPDIR)."""
    home = Path(os.environ.get("HOME") or os.path.expanduser("~"))
    prefect_home = os.environ.get("PREFECT_HOME") or str(home / ".prefect")
    hidden = [
        str(home), prefect_home, str(Path(prefect_home) / "storage"),
        *(os.environ.get(k, "") for k in ("PREFECT_LOCAL_STORAGE_PATH", "PREFECT_RESULTS_LOCAL_STORAGE_PATH",
                                          "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME")),
        "/run", "/var/run", "/tmp", "/var/tmp", tempfile.gettempdir(),
    ]  # fmt: skip
    # What the child's Python needs (read-only, never hidden), and what else the validator's sys.path holds: paths
    # that .pth files add, and the caller's own (read-only, unless they are a hidden directory itself).
    needed = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable),
              os.path.dirname(os.path.realpath(sys.executable)), *site.getsitepackages(),
              *os.environ.get("PYTHONPATH", "").split(os.pathsep), str(Path(__file__).resolve().parents[2]),
              _user_base() or "", *map(str, read_only)]  # fmt: skip
    needed_paths = _existing(needed)
    hide = {os.path.realpath(p) for p in hidden if p and os.path.isdir(p)} - {"/"}
    hide -= {os.path.realpath(p) for p in needed_paths}
    other_paths = {p for p in _existing(sys.path) if os.path.realpath(p) not in hide}
    return {
        "hide": sorted(hide),
        "shm": ["/dev/shm"] if os.path.isdir("/dev/shm") and not os.path.islink("/dev/shm") else [],
        "read_only": sorted((needed_paths | other_paths) - {"/"}),
        "writable": sorted({p for path in writable for p in _both(str(path))}),
        "scratch": sorted(str(path) for path in scratch),
    }


def _existing(paths: Iterable[str]) -> set[str]:
    return {p for path in paths if path and os.path.isabs(path) for p in _both(path) if os.path.exists(p)}


def _both(path: str) -> set[str]:
    # The path as given (the child may reach it through a symlink that lives in a hidden directory) and resolved.
    return {os.path.normpath(os.path.abspath(path)), os.path.realpath(path)}


def clamped(resource_id: int, wanted: int) -> int:
    """`wanted`, or the host's hard limit where that is lower (raising a hard limit takes CAP_SYS_RESOURCE)."""
    _, hard = resource.getrlimit(resource_id)
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


# ---------------------------------------------------------------------------------------------------------------------
# Parent side: the sandbox's processes, their memory, their end


def _stat(pid: int) -> tuple[int, bytes, int, int] | None:
    """(parent pid, state, start time, session) from /proc/PID/stat, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # the command name may hold spaces and parentheses
    try:
        return int(fields[1]), fields[0], int(fields[19]), int(fields[3])
    except (IndexError, ValueError):
        return None


def _has_token(pid: int, token: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return token in f.read().split(b"\0")
    except OSError:  # gone, or another user's
        return False


class SandboxTree:
    """The processes of one sandbox: the child `proc` (started in a session of its own) and its descendants, the
    other members of its session, and (`by_token`, for the fallback, where processes can leave the tree) every
    process whose initial environment carries the validation's token; each with its descendants."""

    def __init__(self, proc: subprocess.Popen, token: str, *, by_token: bool) -> None:
        self.proc = proc
        self.marker = f"{TOKEN_VARIABLE}={token}".encode()
        self.by_token = by_token
        entry = _stat(proc.pid)  # our unreaped child: the number is its own
        self.start = entry[2] if entry else None

    def processes(self, *, by_token: bool) -> dict[int, int]:
        """The live ones, pid -> start time."""
        table = {}
        for name in os.listdir("/proc"):
            if name.isdigit() and (entry := _stat(int(name))) is not None:
                table[int(name)] = entry
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (ppid, *_) in table.items():
            children[ppid].append(pid)
        session = self.proc.pid
        starts = [session] if self.proc.poll() is None else []
        # A session's id is not given to another process while any member lives; once none does, it may be (a new
        # session led by a process with that number): then it is no longer ours.
        leader = table.get(session)
        if leader is None or leader[2] == self.start:
            starts += [pid for pid, entry in table.items() if entry[3] == session]
        if by_token:
            starts += [pid for pid, entry in table.items() if entry[1] != b"Z" and _has_token(pid, self.marker)]
        found: dict[int, int] = {}
        while starts:
            pid = starts.pop()
            if pid in table and pid not in found:
                found[pid] = table[pid][2]
                starts.extend(children[pid])
        mine = os.getpid()
        return {pid: start for pid, start in found.items() if table[pid][1] != b"Z" and pid != mine}

    def watch(self, timeout_s: float, memory_bytes: int) -> tuple[str, int]:
        """Wait until the child exits, the time limit passes or the processes together pass the memory limit,
        checking every POLL_S: ("exited", 0), ("timeout", 0) or ("memory", bytes used). Waits on the process, never
        on its output, so nothing it leaves running delays the verdict."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout", 0
            try:
                self.proc.wait(timeout=min(POLL_S, left))
                return "exited", 0
            except subprocess.TimeoutExpired:
                pass
            used = resident_bytes(self.processes(by_token=self.by_token), memory_bytes)
            if used > memory_bytes:
                return "memory", used

    def kill(self) -> None:
        """Kill them all: stopped first (a stopped process cannot fork), then killed, in rounds until three scans
        in a row find none (a process may fork between a scan and its signal, and one in the middle of an exec
        shows no environment for an instant). The token is looked for here in either containment."""
        quiet = 0
        for _ in range(200):
            targets = self.processes(by_token=True)
            quiet = 0 if targets else quiet + 1
            if quiet == 3:
                return
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid, start in targets.items():
                    _signal(pid, start, sig)
            time.sleep(0.01)


def resident_bytes(pids: Iterable[int], limit: int) -> int:
    """The memory of these processes together: the sum of their resident sizes, or, where that passes `limit`,
    of their proportional set sizes (shared pages counted once; slower to read, so only then)."""
    pids = list(pids)
    page = os.sysconf("SC_PAGE_SIZE")
    total = sum(_statm_resident(pid) * page for pid in pids)
    if total <= limit:
        return total
    return sum(_pss(pid, page) for pid in pids)


def _statm_resident(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int, page: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return _statm_resident(pid) * page


def _signal(pid: int, start: int, sig: int) -> None:
    # Through a pidfd, after checking the start time: never a process that took the number of one that ended.
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno != errno.ENOSYS:
            return  # gone
        fd = None
    try:
        entry = _stat(pid)
        if entry is None or entry[2] != start:
            return
        if fd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(fd, sig)
    except OSError:
        pass
    finally:
        if fd is not None:
            os.close(fd)


# ---------------------------------------------------------------------------------------------------------------------
# Parent side: reading what the child left, with limits


def read_tail(fd: int, size: int) -> str:
    """The last `size` bytes of the open file `fd`, printable."""
    try:
        length = os.fstat(fd).st_size
        data = os.pread(fd, size, max(0, length - size))
    except OSError:
        return ""
    from daf.text import printable  # here: the probe runs this file alone, where only the standard library is

    return printable(data.decode(errors="replace"), keep="\n")


def read_bounded(path: Path, limit: int) -> bytes:
    """The content of `path`, refused (ValueError) unless it is a regular file of at most `limit` bytes: the child
    may have put anything there (a FIFO that never ends, a symlink, a huge file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise  # no result at all: the caller says the child ended before it reported
    except OSError as exc:
        raise ValueError(f"the result file cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("the result file is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"the result file has {info.st_size} bytes, over the limit of {limit}; not read")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ValueError(f"the result file grew over the limit of {limit} bytes; not read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove_within(path: Path, seconds: float) -> None:
    """Remove the directory `path`, waiting at most `seconds`: what takes longer (a child can leave millions of
    files) goes on in a background thread, and may be left behind if this process ends first."""

    retried: set[str] = set()

    def retry(function: Any, target: str, _: Any) -> None:  # the child may have taken the permissions away
        if target in retried:
            return
        retried.add(target)
        try:
            os.chmod(os.path.dirname(target), 0o700)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, 0o700)
                shutil.rmtree(target, onerror=retry)
            else:
                os.unlink(target)
        except OSError:
            pass

    def remove() -> None:
        shutil.rmtree(path, onerror=retry)
        if os.path.exists(path):  # a directory emptied only by the retries
            shutil.rmtree(path, ignore_errors=True)

    thread = threading.Thread(target=remove, name="daf-sandbox-cleanup", daemon=True)
    thread.start()
    thread.join(seconds)


# ---------------------------------------------------------------------------------------------------------------------
# Child side: applied at the start of the child, before any bundle code runs


def enter(plan: dict[str, Any]) -> None:
    """Limit this process and what it starts: address space and written file size per process (clamped to the
    host's hard limits), no core dumps, a child subreaper (orphans stay its descendants), then, in namespaces,
    the mounts of `plan`, and finally no capabilities and no new privileges (what is hidden stays hidden).
    Raises OSError where the namespaces' set-up fails: the caller must not run bundle code then."""
    libc = _libc()
    for resource_id, wanted in ((resource.RLIMIT_AS, plan.get("address_space")),
                                (resource.RLIMIT_FSIZE, plan.get("file_size")), (resource.RLIMIT_CORE, 0)):  # fmt: skip
        if wanted is not None:
            value = clamped(resource_id, int(wanted))
            resource.setrlimit(resource_id, (value, value))  # the hard limit too: code cannot raise it back
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # in a PID namespace PID 1 already is
    if plan.get("namespaces"):
        _mount(libc, plan["mounts"])
    _drop_privileges(libc, required=bool(plan.get("namespaces")))


@functools.cache
def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _mount(libc: Any, mounts: dict[str, list[str]]) -> None:
    # Opened before anything is covered: what is bound back comes from these, not from the (hidden) paths.
    sources = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in {*mounts["read_only"], *mounts["writable"]}
               if os.path.exists(p)}  # fmt: skip
    try:
        _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making mounts private")
        # Deepest first: a hidden directory inside a kept one is then hidden in the kept one's copy as well.
        for path in sorted(mounts["hide"], key=_depth, reverse=True):
            if os.path.isdir(path):
                _tmpfs(libc, path, HIDDEN_TMPFS)
        for path in mounts.get("shm", []):
            _tmpfs(libc, path, SHM_TMPFS)
        hidden = [*mounts["hide"], *mounts.get("shm", [])]
        binds = [(p, False) for p in mounts["read_only"]] + [(p, True) for p in mounts["writable"]]
        for path, writable in sorted(binds, key=lambda b: (_depth(b[0]), b[1])):  # outer first, writable last
            if path not in sources:
                continue
            needed = writable or any(_within(path, h) for h in hidden)
            try:
                _bind(libc, sources[path], path, read_only=not writable)
            except OSError:
                if needed:  # without it the child cannot run; elsewhere read-only is a bonus
                    raise
        for path in mounts.get("scratch", []):
            _tmpfs(libc, path, SCRATCH_TMPFS)
    finally:
        for fd in sources.values():
            os.close(fd)  # an open descriptor would lead back to the hidden originals (/proc/self/fd)


def _tmpfs(libc: Any, path: str, options: str) -> None:
    flags = MS_NOSUID | MS_NODEV
    _check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", flags, options.encode()), f"mounting a tmpfs on {path}")


def _bind(libc: Any, source_fd: int, path: str, *, read_only: bool) -> None:
    if not os.path.exists(path):  # inside a hidden directory: a mount point in its tmpfs
        if stat.S_ISDIR(os.fstat(source_fd).st_mode):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Path(path).touch()
    source = f"/proc/self/fd/{source_fd}".encode()
    _check(libc.mount(source, path.encode(), None, MS_BIND | MS_REC, None), f"binding {path}")
    if read_only:
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        kept = os.statvfs(path).f_flag
        flags |= sum(ms for st_bit, ms in _LOCKED_FLAGS.items() if kept & st_bit)
        _check(libc.mount(None, path.encode(), None, flags, None), f"making {path} read-only")


def _depth(path: str) -> int:
    return len(Path(path).parts)


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_privileges(libc: Any, *, required: bool) -> None:
    """No capabilities, none to regain (an empty bounding set: exec as root gives none) and no new privileges
    (setuid and file-capability binaries give none): in namespaces this is what keeps the child from unmounting
    what hides the user's files. Without CAP_SETPCAP (an ordinary user, no namespaces) the bounding set stays."""
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    cap = 0
    while libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0:
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
        cap += 1
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "dropping capabilities")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "setting no_new_privs")
    if required and any(libc.prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1 for c in range(cap)):
        raise OSError(errno.EPERM, "the capability bounding set could not be emptied")


def _probe_child(scratch: str) -> None:
    """The probe, run as PID 1 of fresh namespaces: set up as the real child would, then check what it must give."""
    hidden = os.path.join(scratch, "hidden")
    kept = os.path.join(hidden, "kept")
    mounts = {"hide": [hidden], "shm": [], "read_only": [kept], "writable": [], "scratch": []}
    enter({"namespaces": True, "mounts": mounts})
    if os.path.exists(os.path.join(hidden, "secret")):
        raise SystemExit("a hidden file is visible")
    if not os.path.exists(os.path.join(kept, "file")):
        raise SystemExit("a kept file is not visible")
    if os.access(kept, os.W_OK):
        raise SystemExit("a read-only directory is writable")
    if _libc().umount2(hidden.encode(), 0) == 0:
        raise SystemExit("the hidden directory can be unmounted")
    print("ok")


if __name__ == "__main__" and sys.argv[1:2] == ["--probe"]:
    _probe_child(sys.argv[2])
