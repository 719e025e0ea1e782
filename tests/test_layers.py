"""The layers, enforced: entry (daf.orchestrators, daf.cli) -> flows (daf.flows) -> tasks (daf.tasks) -> core (the
rest of daf). No module imports a higher layer, the core never imports Prefect, nothing hides an import in a string,
and importing DAF changes nothing process-wide."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Where each installed package's files live in the repository (pyproject.toml's package-dir).
ROOTS = {"daf": REPO / "daf", "daf.flows": REPO / "flows", "daf.tasks": REPO / "tasks"}
CORE, TASKS, FLOWS, ENTRY = 0, 1, 2, 3
LAYER_NAMES = {CORE: "core", TASKS: "tasks", FLOWS: "flows", ENTRY: "entry"}
ENTRY_MODULES = ("daf.orchestrators", "daf.cli")
ORCHESTRATION_LIBRARIES = ("prefect", "prefect_dask", "prefect_docker", "prefect_kubernetes")


def modules() -> dict[str, Path]:
    """Every module DAF installs, by import name."""
    found: dict[str, Path] = {}
    for package, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def layer(module: str) -> int:
    def within(prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    if any(within(m) for m in ENTRY_MODULES):
        return ENTRY
    if within("daf.flows"):
        return FLOWS
    if within("daf.tasks"):
        return TASKS
    return CORE


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement, at module level or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if f"{base}.{alias.name}" in MODULES]
    return out


MODULES = modules()


def test_no_module_imports_a_higher_layer_and_the_core_never_imports_prefect():
    wrong = []
    for module, path in MODULES.items():
        own = layer(module)
        for line, target in imports(module, path):
            top = target.split(".")[0]
            where = f"{path.relative_to(REPO)}:{line}"
            if top in ("flows", "tasks"):
                wrong.append(f"{where} imports {target}: DAF's layers import as daf.flows / daf.tasks")
            elif top == "daf" and layer(target) > own:
                wrong.append(f"{where} ({LAYER_NAMES[own]}) imports {target} ({LAYER_NAMES[layer(target)]})")
            elif own == CORE and top in ORCHESTRATION_LIBRARIES:
                wrong.append(f"{where} (core) imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_module_hides_an_import_in_a_string():
    hidden = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in ("importlib.import_module", "import_module", "__import__") and node.args:
                argument = node.args[0]
                literal = isinstance(argument, ast.Constant) and not str(argument.value).startswith("daf")
                if not literal:  # a computed name, or a DAF module named by string
                    hidden.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    # Some imports take a name that is data by design: a user's (or a bundle's) policy class path, a dependency
    # named by the environment check, a mission file's mettagrid builder class. Anything else is a hidden edge
    # between modules.
    allowed = {"daf/policies/registry.py", "daf/packaging/sandbox.py", "daf/environment_checks.py", "daf/missions.py"}
    assert [h for h in hidden if h.split(":")[0] not in allowed] == []


def test_the_installed_package_list_covers_every_package_in_the_tree():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert packages == listed


def test_the_core_runs_without_loading_prefect():
    core = sorted(m for m in MODULES if layer(m) == CORE)
    code = (
        "import importlib, json, sys\n"
        f"for m in {core!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{ORCHESTRATION_LIBRARIES!r} or m.startswith(('daf.flows', 'daf.tasks', 'daf.orchestrators', 'daf.cli')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


# Imported first: what they do at import (Prefect configures logging, mettagrid adds a root handler) is theirs.
_SNAPSHOT = """
import importlib, json, logging, os, sys
import matplotlib
matplotlib.use("svg")  # a backend DAF would not pick: a module that switches backends shows up
import mettagrid.simulator.simulator, prefect.main, torch

def state():
    loggers = {"": logging.getLogger()} | {
        n: lg for n, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)
    }
    return {
        "environ": dict(os.environ),
        "backend": matplotlib.get_backend(),
        "torch_threads": torch.get_num_threads(),
        "loggers": {n: [lg.level, len(lg.handlers), len(lg.filters), lg.disabled] for n, lg in loggers.items()},
    }

before = state()
for m in MODULES:
    importlib.import_module(m)
after = state()
changed = {k: [before[k], after[k]] for k in ("environ", "backend", "torch_threads") if before[k] != after[k]}
# Loggers that existed (Prefect's, the root) must be as they were; of the new ones only DAF's are DAF's doing
# (a library imported on first use, such as optuna, configures its own).
changed["loggers"] = {
    n: [before["loggers"].get(n), v] for n, v in after["loggers"].items()
    if (n in before["loggers"] or n.split(".")[0] == "daf") and before["loggers"].get(n, [0, 0, 0, False]) != v
}
print(json.dumps(changed))
"""


@pytest.mark.parametrize("layer_name", ["core", "everything"])
def test_importing_daf_changes_no_process_wide_state(layer_name):
    chosen = [m for m in MODULES if layer_name == "everything" or layer(m) == CORE]
    code = _SNAPSHOT.replace("MODULES", repr(sorted(chosen)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert out.returncode == 0, out.stderr
    changed = json.loads(out.stdout.strip().splitlines()[-1])
    assert changed == {"loggers": {}}, changed
