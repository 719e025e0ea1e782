"""Whether a module may be imported to load a policy class from it, decided from its source without running it.

Python has no way to import a module without executing it, so a class path given as input is checked first: the
module is located with importlib's finders (which execute nothing for a top-level module, and for a submodule
only its parent packages, located the same way), its source is parsed with `ast`, and it must bind the class's
name at its top level (a class, an assignment or an import, also inside a top-level if/try). A module that only
does something when imported (`antigravity`, `this`, a package's `__main__`) binds no such name and is never run.
This narrows what a class path can run to modules that name the class; it is not a sandbox for those modules,
which are the policy's own code.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

MAX_SOURCE_BYTES = 4 << 20  # a module's source read to check it; a policy module is a few KB


def why_not_importable(module_name: str, attr: str) -> str | None:
    """None when `module_name`'s source binds `attr` at its top level; otherwise why it is not imported."""
    parts = module_name.split(".")
    if "__main__" in parts:
        return f"{module_name!r} is a program's entry point (__main__), not a module a policy class is loaded from"
    if not all(p.isidentifier() for p in parts) or not attr.isidentifier():
        return f"{module_name}.{attr} is not a dotted Python name"
    spec = _locate(parts)
    if spec is None:
        return f"cannot import module {module_name!r} (no such module)"
    origin = spec.origin
    if not origin or not origin.endswith(".py") or not Path(origin).is_file():
        kind = "a namespace package" if spec.submodule_search_locations and not origin else f"{origin}"
        return (
            f"module {module_name!r} has no Python source to check for {attr!r} ({kind}); name the module that "
            "defines the class"
        )
    source = Path(origin)
    if source.stat().st_size > MAX_SOURCE_BYTES:
        return f"module {module_name!r} ({source}) is larger than {MAX_SOURCE_BYTES} bytes"
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except (SyntaxError, ValueError) as exc:
        return f"module {module_name!r} ({source}) does not parse: {exc}"
    if attr not in _top_level_names(tree.body):
        return f"module {module_name!r} ({source}) has no class, assignment or import named {attr!r} at its top level"
    return None


def _locate(parts: list[str]) -> importlib.machinery.ModuleSpec | None:
    """The module's spec, found without executing it or (unless already imported) its parent packages."""
    spec = None
    search: list[str] | None = None
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        module = sys.modules.get(name)
        if module is not None:
            spec = module.__spec__
            search = list(getattr(module, "__path__", []) or [])
        elif i == 0:
            try:
                spec = importlib.util.find_spec(name)  # a top-level name: finders only, nothing runs
            except (ImportError, ValueError):
                return None
        else:
            spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None:
            return None
        if i < len(parts) - 1:
            if module is None:
                search = list(spec.submodule_search_locations or [])
            if not search:
                return None  # a module, not a package: it has no submodules
    return spec


def _top_level_names(body: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
        elif isinstance(node, ast.If):
            names |= _top_level_names(node.body) | _top_level_names(node.orelse)
        elif isinstance(node, ast.Try):
            names |= _top_level_names(node.body) | _top_level_names(node.orelse) | _top_level_names(node.finalbody)
            for handler in node.handlers:
                names |= _top_level_names(handler.body)
    return names
