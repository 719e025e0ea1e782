"""Configs from the command line: a YAML file (`--config`), then the command's flags, then `--set KEY=VALUE`
overrides, validated by the config class; and the `--policy` spelling of a policy entry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from daf.cli.exits import BadInput
from daf.input_limits import InputTooLarge, load_yaml

if TYPE_CHECKING:
    from daf.config import DAFConfig

ConfigT = TypeVar("ConfigT", bound="DAFConfig")


def apply_set(data: dict[str, Any], assignment: str) -> None:
    """`a.b=value` into `data`: the value is parsed as YAML (numbers, booleans, lists)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise BadInput(f"--set {assignment!r}: expected KEY=VALUE")
    try:
        value = load_yaml(raw, f"--set {key.strip()}")
    except InputTooLarge as exc:
        raise BadInput(str(exc)) from None
    except yaml.YAMLError:
        value = raw
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise BadInput(f"--set {assignment!r}: {part} is not a mapping")
    node[leaf] = value


def load_config(
    model: type[ConfigT], path: Path | None, flags: dict[str, Any], sets: list[str] | None = None
) -> ConfigT:
    """File, then flags (None = not given), then --set."""
    from daf.config import read_yaml_mapping

    data = read_yaml_mapping(path) if path is not None else {}
    data.update({k: v for k, v in flags.items() if v is not None})
    for assignment in sets or []:
        apply_set(data, assignment)
    return model.from_dict(data, source=str(path) if path else "options")


def parse_policy(text: str) -> dict[str, Any]:
    """`class_path`, `class_path:data_path` or `name=class_path[:data_path]` -> PolicyEntry fields."""
    name = None
    head, sep, rest = text.partition("=")
    if sep and "/" not in head and ":" not in head:
        name, text = head, rest
    class_path, _, data_path = text.partition(":")
    if not class_path:
        raise BadInput(f"--policy {text!r}: expected class_path, class_path:data_path or name=class_path:data_path")
    entry: dict[str, Any] = {"class_path": class_path, "data_path": data_path or None}
    if name:
        entry["name"] = name
    return entry


def parse_policies(texts: list[str] | None) -> list[dict[str, Any]] | None:
    """Every `--policy` given, as PolicyEntry fields; None when none was (the config's own list stands)."""
    return [parse_policy(text) for text in texts] if texts else None
