"""The checks of bundle validation that run the bundle's own code, each validation in a fresh child process.

Loading a policy means importing its modules and calling its class: a bundle can do anything its author wrote.
`daf.packaging.validate_package` checks everything it can without running bundle code (archive entries,
checksums, the spec, the manifest, weights with `torch.load(weights_only=True)`), then hands the rest to
`run_code_checks`, which starts `python -m daf.bundle_sandbox` with a time and memory limit and reads back the
checks it recorded. Whatever the bundle's code does (a shell command, `sys.exit`, patching DAF's functions, an
endless loop, a huge allocation) happens in that child and ends with it: the validator and later validations in
the same process (a worker) are untouched, and the report says what happened.

This protects the validator, not the verdict: code that runs in the child can also forge its answers. Bundles from
strangers need a sandbox of their own (a container or VM without credentials or network) before being loaded
anywhere, and a passing validation says nothing about who wrote a bundle.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from daf.files import atomic_write_text

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
            [sys.executable, "-m", "daf.bundle_sandbox", str(request)],
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
    from mettagrid.policy.prepare_policy_spec import load_policy_spec_from_path

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
    import importlib

    from mettagrid.policy.policy import MultiAgentPolicy

    module_name, _, attr = class_path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except BaseException as exc:  # noqa: BLE001
        return [f"class_path {class_path!r} cannot be imported: {_describe(exc)}"], ""
    if not (isinstance(target, type) and issubclass(target, MultiAgentPolicy)):
        return [f"class_path {class_path!r} is {type(target).__name__}, not a MultiAgentPolicy subclass"], ""
    return [], f"{class_path} is a MultiAgentPolicy"


def _check_mission(checks: _Checks, spec: Any, root: Path, mission: str) -> None:
    from mettagrid.policy.loader import initialize_or_load_policy
    from mettagrid.policy.policy_env_interface import PolicyEnvInterface

    from daf.missions import get_mission

    try:
        config = get_mission(mission)
        policy = initialize_or_load_policy(PolicyEnvInterface.from_mg_cfg(config), spec.model_copy(deep=True))
    except BaseException as exc:  # noqa: BLE001
        checks.add(f"load:{mission}", [f"policy did not load: {_describe(exc)}"])
        return
    checks.add(f"load:{mission}", [], f"{type(policy).__qualname__} imported from {_code_origin(policy, root)}")
    try:
        steps, actions, noops, slowest = smoke_episode(policy, config)
    except BaseException as exc:  # noqa: BLE001
        checks.add(f"episode:{mission}", [f"episode raised {_describe(exc)}"])
        return
    errors = []
    if steps == 0:
        errors.append("the episode ran 0 steps")
    elif noops == actions:
        errors.append(f"all {actions} actions in {steps} steps were noops")
    checks.add(
        f"episode:{mission}",
        errors,
        f"{steps} steps, {actions - noops}/{actions} non-noop actions, slowest step {slowest * 1000:.1f} ms",
    )


def _code_origin(policy: Any, root: Path) -> str:
    module_file = getattr(sys.modules.get(type(policy).__module__), "__file__", None)
    if module_file and Path(module_file).resolve().is_relative_to(root.resolve()):
        return "the bundle"
    return f"installed code ({module_file})"


def smoke_episode(
    policy: Any, config: Any, steps: int = SMOKE_STEPS, seed: int = SMOKE_SEED
) -> tuple[int, int, int, float]:
    """One short episode with every agent driven by `policy`: (steps run, actions, noop actions, slowest step s)."""
    from daf.evaluation import has_batch_path

    config = config.model_copy(deep=True)
    config.game.max_steps = steps
    if has_batch_path(policy):
        return _smoke_batched(policy, config, seed)
    return _smoke_per_agent(policy, config, seed)


def _smoke_batched(policy: Any, config: Any, seed: int) -> tuple[int, int, int, float]:
    from daf.policies.base import DAFPolicy
    from daf.policies.rng import row_seeds
    from daf.simulation import SimBatch

    batch = SimBatch([config])
    noop = _noop_index(config)
    steps = actions = noops = 0
    slowest = 0.0
    try:
        batch.start(0, seed)
        if isinstance(policy, DAFPolicy):
            policy.reset_rows(np.arange(batch.num_rows), row_seeds(seed, batch.num_rows))
        while not batch.is_done(0):
            start = time.perf_counter()
            policy.step_batch(batch.observations, batch.actions)
            slowest = max(slowest, time.perf_counter() - start)
            actions += batch.num_rows
            noops += int(np.sum(batch.actions == noop))
            batch.step([0])
            steps += 1
    finally:
        batch.close()
    return steps, actions, noops, slowest


def _smoke_per_agent(policy: Any, config: Any, seed: int) -> tuple[int, int, int, float]:
    from mettagrid.simulator.simulator import Simulation

    from daf.missions import with_map_seed

    agents = [policy.agent_policy(i) for i in range(config.game.num_agents)]
    for agent in agents:
        agent.reset()
    sim = Simulation(with_map_seed(config, seed), seed=seed)
    steps = actions = noops = 0
    slowest = 0.0
    try:
        while not sim.is_done():
            for agent_id, obs in enumerate(sim.observations()):
                start = time.perf_counter()
                action = agents[agent_id].step(obs)
                slowest = max(slowest, time.perf_counter() - start)
                sim.agent(agent_id).set_action(action)
                actions += 1
                noops += action.name == "noop"
            sim.step()
            steps += 1
    finally:
        sim.close()
    return steps, actions, noops, slowest


def _noop_index(config: Any) -> int:
    from mettagrid.policy.policy_env_interface import PolicyEnvInterface

    names = PolicyEnvInterface.from_mg_cfg(config).all_action_names
    return names.index("noop") if "noop" in names else -1


def _check_reward(spec: Any, mission: str, episodes: int, threshold: float) -> tuple[list[str], str]:
    from daf.evaluation import evaluate

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
