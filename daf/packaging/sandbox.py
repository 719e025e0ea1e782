"""The checks of bundle validation that run the bundle's own code, each validation in a fresh, contained child process.

Loading a policy means importing its modules and calling its class: a bundle can do anything its author wrote.
`daf.packaging.validate_package` checks everything it can without running bundle code (archive entries,
checksums, the spec, the manifest, weights with `torch.load(weights_only=True)`), then hands the rest to
`run_code_checks`, which starts `python -m daf.packaging.sandbox` and reads back the checks it recorded. Whatever
the bundle's code does (a shell command, `sys.exit`, patching DAF's functions, an endless loop, a huge allocation,
processes that detach) happens in that child's process tree and ends with it; the report's first code check,
"containment", says how it was contained and limited (daf.packaging._containment does it):

- Where the host allows it (probed once per process; DAF_SANDBOX_NAMESPACES=0 turns it off), the child runs in its
  own user, PID, network, IPC and mount namespaces: when it ends the kernel kills every process it started (no
  double fork or new session escapes), it has no network, the user's home, Prefect's home and storage, and the
  temporary and runtime directories are hidden behind empty tmpfs mounts, Python, its packages, DAF and the
  extracted bundle are bound back read-only, its HOME and TMPDIR are a small tmpfs of its own, and it then drops
  every capability, so it cannot undo any of that.
- Elsewhere it runs in its own session as a child subreaper (orphans stay its descendants) with a random token in
  its environment; at the end every descendant and every process carrying the token is killed.
- Either way: a scrubbed environment (an allow-list: no PREFECT_*, no credentials) with an empty HOME and TMPDIR of
  its own; the verdict at the time limit whatever is left running (its output goes to a file, never a pipe, and
  only the file's tail is read back; cleaning up after it waits at most CLEANUP_S), and the child killed by the
  kernel if the validator dies first; the resident memory of all its processes together watched every 0.1 s and
  the tree killed past the limit, with an address-space limit per process (clamped to the host's hard limit) and a
  16 MiB limit on every file it writes; its result file refused unread above 4 MiB and checked for shape.

This protects the validator, not the verdict: code that runs in the child can also forge its answers. It still runs
as the same user: in namespaces it can read and write whatever of this user's files are not hidden or read-only
(other projects, mounted data), and memory it keeps in files (memfd, files it writes) is not counted with the
resident memory; without namespaces it also reaches the network and the user's other files and processes, and
code that deliberately kills its supervisor, or starts processes with a clean environment from a process that left
the tree, escapes the final sweep. Bundles from strangers need a sandbox of their own (a container or VM without
credentials or network) before being loaded anywhere, and a passing validation says nothing about who wrote a bundle.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from mettagrid.config.mettagrid_config import MettaGridConfig
from mettagrid.policy.loader import initialize_or_load_policy
from mettagrid.policy.policy import MultiAgentPolicy, PolicySpec
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.policy.prepare_policy_spec import load_policy_spec_from_path

from daf.evaluation import ActionTally, evaluate, run_episodes
from daf.files import atomic_write_text
from daf.missions import get_mission
from daf.packaging import _containment
from daf.text import printable

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MEMORY_BYTES = 8 << 30  # resident memory of all the child's processes together
DEFAULT_ADDRESS_SPACE_BYTES = 8 << 30  # per process: torch's CPU import alone reserves ~2 GiB
FILE_SIZE_BYTES = 16 << 20  # the largest file a sandbox process may write (its output included)
RESULT_LIMIT_BYTES = 4 << 20  # a larger result file is refused unread
# Bounds on what the child's result may hold (the report then shows at most 20 errors a check, 500 characters a line).
MAX_CHECKS = 256
MAX_ERRORS = 1000
MAX_TEXT = 10_000
TAIL_BYTES = 4096
CLEANUP_S = 2.0  # removing what the child left in its work directory delays the verdict at most this long
RESERVED_NAMES = ("containment", "sandbox")  # the parent's own checks: a child cannot report them
SMOKE_STEPS = 10
SMOKE_SEED = 42
EVAL_SEED = 42


def run_code_checks(
    root: Path,
    missions: list[str],
    reward_threshold: float | None,
    eval_episodes: int,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    address_space_bytes: int = DEFAULT_ADDRESS_SPACE_BYTES,
) -> list[dict[str, Any]]:
    """The checks that load and run the extracted bundle at `root`, recorded by a child process: a list of
    {"name", "errors", "message", "skipped"}, first a passing "containment" check that says how the child was
    contained and limited. The child's failure to report, or to report in shape, is a failed "sandbox" check."""
    namespaces, why_not = _containment.namespace_support()
    address_space = _containment.clamped(resource.RLIMIT_AS, address_space_bytes)
    how = _describe_containment(namespaces, why_not, timeout_s, memory_bytes, address_space, address_space_bytes)
    work = Path(tempfile.mkdtemp(prefix="daf-sandbox-"))
    try:
        home, tmp, result = work / "home", work / "tmp", work / "result.json"
        home.mkdir()
        tmp.mkdir()
        plan = {"namespaces": namespaces, "address_space": address_space, "file_size": FILE_SIZE_BYTES,
                "mounts": _containment.mount_plan([root], [work], [home, tmp]) if namespaces else None}  # fmt: skip
        request = work / "request.json"
        request.write_text(json.dumps({
            "root": str(root), "missions": missions, "reward_threshold": reward_threshold,
            "eval_episodes": eval_episodes, "result": str(result), "containment": plan,
        }))  # fmt: skip
        token = secrets.token_hex(16)
        command = _containment.child_command([sys.executable, "-m", "daf.packaging.sandbox", str(request)], namespaces)
        # The child's output goes to a file, never a pipe: nothing it leaves running can hold the validator open.
        log = os.open(work / "output.log", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            env = _containment.child_environment(home, tmp, token)
            proc = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            tree = _containment.SandboxTree(proc, token, by_token=not namespaces)
            try:
                outcome = tree.watch(timeout_s, memory_bytes)
            finally:
                tree.kill()  # whatever it left running, and the child itself
                proc.wait()
            tail = _containment.read_tail(log, TAIL_BYTES)
        finally:
            os.close(log)
        verdict = _verdict(outcome, timeout_s, memory_bytes, result, proc.returncode, tail)
    finally:
        _containment.remove_within(work, CLEANUP_S)  # the child may have left a million files there
    return [_check_item("containment", [], how), *verdict]


def _verdict(
    outcome: tuple[str, int], timeout_s: float, memory_bytes: int, result: Path, returncode: int, tail: str
) -> list[dict[str, Any]]:
    if outcome[0] == "timeout":
        return [_failed("sandbox", f"the bundle's code did not finish within {timeout_s:.0f} s; killed")]
    if outcome[0] == "memory":
        used = f"{outcome[1] >> 20} MiB together, over the {_gib(memory_bytes)} limit"
        return [_failed("sandbox", f"memory limit exceeded: the bundle's processes used {used}; killed")]
    return _read_result(result, returncode, tail)


def _describe_containment(
    namespaces: bool, why_not: str, timeout_s: float, memory_bytes: int, address_space: int, wanted: int
) -> str:
    """What the report says of the containment: short (a report line is cut at 500 characters), the limits last."""
    if namespaces:
        how = ("own user, PID, network, IPC and mount namespaces: no network, no process outlives the check, home, "
               "Prefect, temporary and runtime directories hidden, Python and DAF read-only")  # fmt: skip
    else:
        how = (f"no namespaces ({why_not[:80]}): own session, child subreaper, processes found by ancestry and a "
               "per-validation token and killed at the end, but code that detaches on purpose can escape; network "
               "and this user's files and processes reachable")  # fmt: skip
    clamp = f" (clamped from {_gib(wanted)}: the host's hard limit)" if address_space < wanted else ""
    per_process = f"{_gib(address_space)} address space{clamp} and {FILE_SIZE_BYTES >> 20} MiB a file"
    return f"{how}; clean environment; limits: {timeout_s:.0f} s, {_gib(memory_bytes)} resident memory in all, " + (
        f"per process {per_process}"
    )


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def _read_result(path: Path, returncode: int, tail: str) -> list[dict[str, Any]]:
    """The child's checks, read within limits and checked for shape; anything else is a failed "sandbox" check."""
    try:
        data = _containment.read_bounded(path, RESULT_LIMIT_BYTES)
    except FileNotFoundError:
        lines = [line for line in tail.strip().splitlines() if line.strip()][-3:]
        detail = f": {' | '.join(lines)}"[:MAX_TEXT] if lines else ""
        return [_failed("sandbox", f"the checking process ended (exit code {returncode}) before it reported; "
                                   f"the bundle's code may have exited or crashed it{detail}")]  # fmt: skip
    except ValueError as exc:
        return [_failed("sandbox", str(exc))]
    try:
        return _result_items(json.loads(data))
    except (ValueError, RecursionError) as exc:
        detail = printable(str(exc), keep="")[:300]
        return [_failed("sandbox", f"the checking process reported a malformed result: {detail}")]


def _result_items(value: Any) -> list[dict[str, Any]]:
    """Checks in shape: a non-empty list of at most MAX_CHECKS {"name": str, "errors": [str], "message": str,
    "skipped": bool}, with long texts cut and control characters replaced (they reach the user's terminal)."""
    if not isinstance(value, list) or not 0 < len(value) <= MAX_CHECKS:
        raise ValueError(f"not a list of 1 to {MAX_CHECKS} checks")
    items = []
    for index, item in enumerate(value):
        if not (isinstance(item, dict) and set(item) == {"name", "errors", "message", "skipped"}):
            raise ValueError(f"check {index} is not a {{name, errors, message, skipped}} object")
        name, errors, message, skipped = item["name"], item["errors"], item["message"], item["skipped"]
        if not (isinstance(name, str) and name and isinstance(message, str) and isinstance(skipped, bool)
                and isinstance(errors, list) and all(isinstance(e, str) for e in errors)):  # fmt: skip
            raise ValueError(f"check {index} has fields of the wrong types")
        if name in RESERVED_NAMES:
            raise ValueError(f"check {index} is named {name!r}, which only the validator reports")
        texts = [_text(e) for e in errors[:MAX_ERRORS]]
        if len(errors) > MAX_ERRORS:
            texts.append(f"... and {len(errors) - MAX_ERRORS} more")
        items.append({"name": _text(name, 200), "errors": texts, "message": _text(message), "skipped": skipped})
    return items


def _text(text: str, limit: int = MAX_TEXT) -> str:
    # Cut by the child's own characters, then shown escaped (an escape is at most 10 characters: still bounded).
    shown = printable(text[:limit])
    return shown if len(text) <= limit else f"{shown}... ({len(text) - limit} more characters)"


def _check_item(name: str, errors: list[str], message: str) -> dict[str, Any]:
    return {"name": name, "errors": errors, "message": message, "skipped": False}


def _failed(name: str, error: str) -> dict[str, Any]:
    return _check_item(name, [error], "")


# ---------------------------------------------------------------------------------------------------------------------
# The child: everything below runs the bundle's code


class _Checks:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, name: str, errors: list[str], message: str = "") -> bool:
        self.items.append({"name": name, "errors": list(errors), "message": message, "skipped": False})
        return not errors

    def skip(self, name: str, reason: str) -> None:
        self.items.append({"name": name, "errors": [], "message": reason, "skipped": True})

    @property
    def failed(self) -> bool:
        return any(item["errors"] for item in self.items)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _child(request: dict[str, Any]) -> list[dict[str, Any]]:
    checks = _Checks()
    root = Path(request["root"])
    try:
        # A directory is used in place (extracted safely by the parent); mettagrid puts it on sys.path.
        spec = load_policy_spec_from_path(root)
    except BaseException as exc:  # noqa: BLE001  (bundle code may raise anything, SystemExit included)
        checks.add("spec_load", [f"load_policy_spec_from_path failed: {_describe(exc)}"])
        return checks.items
    checks.add("spec_load", [], spec.class_path)
    if not checks.add("class", *_check_class(spec.class_path)):
        return checks.items
    for mission in request["missions"]:
        _check_mission(checks, spec, root, mission)
    threshold = request["reward_threshold"]
    if threshold is None:
        checks.skip("evaluate", "no reward_threshold given")
    elif checks.failed:
        checks.skip("evaluate", "earlier checks failed")
    else:
        for mission in request["missions"]:
            checks.add(f"evaluate:{mission}", *_check_reward(spec, mission, request["eval_episodes"], threshold))
    return checks.items


def _check_class(class_path: str) -> tuple[list[str], str]:
    """The class must be a MultiAgentPolicy before anything calls it: mettagrid's loader calls whatever
    class_path names (`pydoc.pipepager` with a `cmd` ran a shell command)."""
    # Not daf.policies.registry.load_policy_class: that resolves DAF's short names first (a bundle's "lstm" would be
    # checked as DAF's LSTMPolicy while mettagrid's loader, which knows nothing of DAF's names, loads its own), and
    # it lets anything but ImportError through, where a bundle's import may raise SystemExit or KeyboardInterrupt.
    module_name, _, attr = class_path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except BaseException as exc:  # noqa: BLE001
        return [f"class_path {class_path!r} cannot be imported: {_describe(exc)}"], ""
    if not (isinstance(target, type) and issubclass(target, MultiAgentPolicy)):
        return [f"class_path {class_path!r} is {type(target).__name__}, not a MultiAgentPolicy subclass"], ""
    return [], f"{class_path} is a MultiAgentPolicy"


def _check_mission(checks: _Checks, spec: PolicySpec, root: Path, mission: str) -> None:
    try:
        config = get_mission(mission)
        policy = initialize_or_load_policy(PolicyEnvInterface.from_mg_cfg(config), spec.model_copy(deep=True))
    except BaseException as exc:  # noqa: BLE001
        checks.add(f"load:{mission}", [f"policy did not load: {_describe(exc)}"])
        return
    checks.add(f"load:{mission}", [], f"{type(policy).__qualname__} imported from {_code_origin(policy, root)}")
    try:
        steps, tally = _smoke_episode(policy, config)
    except BaseException as exc:  # noqa: BLE001
        checks.add(f"episode:{mission}", [f"episode raised {_describe(exc)}"])
        return
    errors = []
    valid = tally.actions - tally.invalid
    if steps == 0:
        errors.append("the episode ran 0 steps")
    elif tally.invalid:
        # mettagrid steps on without an action it does not have: counted as no action at all, not as acting.
        errors.append(
            f"{tally.invalid} of {tally.actions} actions in {steps} steps were no action of the mission (ids outside "
            f"0..{len(tally.action_names) - 1})"
        )
    elif tally.noops == tally.actions:
        errors.append(f"all {tally.actions} actions in {steps} steps were noops")
    checks.add(
        f"episode:{mission}",
        errors,
        f"{steps} steps, {valid - tally.noops}/{tally.actions} valid non-noop actions, "
        f"slowest step {tally.slowest_step_s * 1000:.1f} ms",
    )


def _code_origin(policy: MultiAgentPolicy, root: Path) -> str:
    module_file = getattr(sys.modules.get(type(policy).__module__), "__file__", None)
    if module_file and Path(module_file).resolve().is_relative_to(root.resolve()):
        return "the bundle"
    return f"installed code ({module_file})"


def _smoke_episode(policy: MultiAgentPolicy, config: MettaGridConfig) -> tuple[int, ActionTally]:
    """One short episode with every agent driven by `policy`: the steps it ran, and what the policy chose."""
    tally = ActionTally(PolicyEnvInterface.from_mg_cfg(config).all_action_names)
    (outcome,) = run_episodes(policy, config, [SMOKE_SEED], max_steps=SMOKE_STEPS, tally=tally)
    return outcome.steps, tally


def _check_reward(spec: PolicySpec, mission: str, episodes: int, threshold: float) -> tuple[list[str], str]:
    try:
        result = evaluate(spec.model_copy(deep=True), mission, episodes, seed=EVAL_SEED)
    except BaseException as exc:  # noqa: BLE001
        return [f"evaluation raised {_describe(exc)}"], ""
    mean = float(np.mean(result.rewards))
    message = f"mean reward {mean:.2f} over {episodes} episodes (threshold {threshold})"
    return ([] if mean >= threshold else [f"{message}: below threshold"]), message


def main(request_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    try:
        _containment.enter(request["containment"])  # limits, mounts, no capabilities: before any bundle code
    except Exception as exc:  # noqa: BLE001
        error = f"the sandbox could not be set up, so the bundle's code did not run: {_describe(exc)}"
        if request["containment"].get("namespaces"):
            error += f" (with {_containment.SWITCH_VARIABLE}=0 it runs without namespaces, less contained)"
        atomic_write_text(request["result"], json.dumps([_failed("sandbox_setup", error)]))
        return
    items = _child(request)
    atomic_write_text(request["result"], json.dumps(items))


if __name__ == "__main__":
    main(sys.argv[1])
