"""The checks of bundle validation that run the bundle's own code, each validation in a fresh child process.

Loading a policy means importing its modules and calling its class: a bundle can do anything its author wrote.
`daf.packaging.validate_package` checks everything it can without running bundle code (archive entries,
checksums, the spec, the manifest, weights with `torch.load(weights_only=True)`), then hands the rest to
`run_code_checks`, which starts `python -m daf.packaging.sandbox` with a time and memory limit and reads back the
checks it recorded. Whatever the bundle's code does (a shell command, `sys.exit`, patching DAF's functions, an
endless loop, a huge allocation) happens in that child and ends with it: the validator and later validations in
the same process (a worker) are untouched, and the report says what happened.

This protects the validator, not the verdict: code that runs in the child can also forge its answers. Bundles from
strangers need a sandbox of their own (a container or VM without credentials or network) before being loaded
anywhere, and a passing validation says nothing about who wrote a bundle.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
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

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MEMORY_BYTES = 8 << 30  # address space of the child: torch's CPU import alone reserves ~2 GiB
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
) -> list[dict[str, Any]]:
    """The checks that load and run the extracted bundle at `root`, recorded by a child process: a list of
    {"name", "errors", "message", "skipped"}. The child's failure to report is itself a failed check."""
    with tempfile.TemporaryDirectory(prefix="daf-sandbox-") as work:
        result = Path(work) / "result.json"
        request = Path(work) / "request.json"
        request.write_text(json.dumps({
            "root": str(root), "missions": missions, "reward_threshold": reward_threshold,
            "eval_episodes": eval_episodes, "result": str(result),
        }))  # fmt: skip
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no __pycache__ written into the bundle
        proc = subprocess.Popen(
            [sys.executable, "-m", "daf.packaging.sandbox", str(request)],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its whole process group is killed at the time limit
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes)),
        )
        try:
            output, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return [_failed("sandbox", f"the bundle's code did not finish within {timeout_s:.0f} s; killed")]
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything the bundle's code left running
            except ProcessLookupError:
                pass
        try:
            return json.loads(result.read_text())
        except (OSError, ValueError):
            tail = output.decode(errors="replace").strip().splitlines()[-3:]
            detail = f": {' | '.join(tail)}" if tail else ""
            return [_failed("sandbox", f"the checking process ended (exit code {proc.returncode}) before it reported; "
                                       f"the bundle's code may have exited or crashed it{detail}")]  # fmt: skip


def _failed(name: str, error: str) -> dict[str, Any]:
    return {"name": name, "errors": [error], "message": "", "skipped": False}


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
    if steps == 0:
        errors.append("the episode ran 0 steps")
    elif tally.noops == tally.actions:
        errors.append(f"all {tally.actions} actions in {steps} steps were noops")
    checks.add(
        f"episode:{mission}",
        errors,
        f"{steps} steps, {tally.actions - tally.noops}/{tally.actions} non-noop actions, "
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
    items = _child(request)
    atomic_write_text(request["result"], json.dumps(items))


if __name__ == "__main__":
    main(sys.argv[1])
