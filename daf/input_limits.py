"""Limits on structured input (YAML files, `--set` values, dicts handed to the Python API), checked before anything
else looks at it, so that a small input cannot take the machine.

YAML anchors and aliases stay allowed (`<<: *defaults` is common in configs), but what they expand to is counted:
a 422-byte file of nested aliases expanded to gigabytes in `json.dumps` and `model_dump`. The same count guards
Python dicts whose values share references, and refuses self-references. Nesting depth is capped while parsing,
before Python's recursion limit turns a deep document into an "unexpected RecursionError". A key given twice in
one mapping is an error: PyYAML keeps the last silently, so `learning_rate` written twice in a long config trains
with whichever came second.
"""

from __future__ import annotations

from typing import Any

import yaml

from daf.errors import InputError

MAX_YAML_BYTES = 1 << 20  # 1 MiB: a DAF config or mission is a few KB
MAX_DEPTH = 64
MAX_EXPANDED_VALUES = 100_000  # scalars, mappings and lists, counting every reference to a shared one again


class InputTooLarge(InputError, ValueError):
    """Input beyond a limit of this module; the message names the limit."""


class _DepthLimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python tags), failing at MAX_DEPTH levels of nesting instead of recursing on."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise InputTooLarge(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges; keys given beside it override it, as YAML intends
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # unhashable: SafeLoader reports it with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> Any:
    """`yaml.safe_load` within the limits above; raises InputTooLarge or yaml.YAMLError."""
    if len(text.encode()) > MAX_YAML_BYTES:
        raise InputTooLarge(f"{source}: larger than {MAX_YAML_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=_DepthLimitedLoader)  # noqa: S506 (a SafeLoader subclass)
    except InputTooLarge as exc:
        raise InputTooLarge(f"{source}: {exc}") from None
    check_size(data, source)
    return data


def check_size(value: Any, what: str) -> None:
    """Refuse a value that expands to more than MAX_EXPANDED_VALUES values, nests deeper than MAX_DEPTH, or
    contains itself. Shared containers are sized once and counted at every reference, so this takes time in
    the number of distinct containers, not in what they would expand to."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    # Iterative post-order walk: (container, depth, children_pushed).
    stack: list[tuple[Any, int, bool]] = [(value, 1, False)]
    while stack:
        node, depth, expanded = stack.pop()
        if not isinstance(node, dict | list | tuple):
            continue
        key = id(node)
        if expanded:
            children = node.values() if isinstance(node, dict) else node
            total = 1 + sum(sizes.get(id(c), 1) if isinstance(c, dict | list | tuple) else 1 for c in children)
            sizes[key] = total
            in_progress.discard(key)
            if total > MAX_EXPANDED_VALUES:
                raise InputTooLarge(f"{what}: expands to more than {MAX_EXPANDED_VALUES} values (shared references)")
            continue
        if key in sizes:
            continue
        if key in in_progress:
            raise InputTooLarge(f"{what}: contains a reference to itself")
        if depth > MAX_DEPTH:
            raise InputTooLarge(f"{what}: nested deeper than {MAX_DEPTH} levels")
        in_progress.add(key)
        stack.append((node, depth, True))
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1, False) for c in children if isinstance(c, dict | list | tuple))
