"""Fault injection for reliability tests and drills: make a named stage fail on purpose.

Set `DAF_FAULTS` to a comma-separated list of `stage:kind[:count]`:
  - `kind` is `transient` (raises TransientFault, which DAF's tasks retry) or `permanent` (raises
    PermanentFault, never retried);
  - `count` is how many times the fault fires in this process (default: every time).
Example: `DAF_FAULTS="evaluation:transient:1,comparison:permanent"`. Stage names are the task names:
environment_validation, training, evaluation, comparison, sweep, packaging, report.
"""

from __future__ import annotations

import os
import threading


class TransientFault(RuntimeError):
    """An injected failure that a retry may cure."""


class PermanentFault(RuntimeError):
    """An injected failure that no retry will cure."""


_fired: dict[str, int] = {}
_lock = threading.Lock()


def _parse(spec: str) -> dict[str, tuple[str, int | None]]:
    faults = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        if len(parts) not in (2, 3) or parts[1] not in ("transient", "permanent"):
            raise ValueError(f"DAF_FAULTS entry {item!r}: expected stage:transient|permanent[:count]")
        faults[parts[0]] = (parts[1], int(parts[2]) if len(parts) == 3 else None)
    return faults


def maybe_fail(stage: str) -> None:
    """Raise the fault configured for `stage`, if any (and if its count is not used up)."""
    spec = os.environ.get("DAF_FAULTS", "")
    if not spec:
        return
    fault = _parse(spec).get(stage)
    if fault is None:
        return
    kind, count = fault
    with _lock:
        fired = _fired.get(stage, 0)
        if count is not None and fired >= count:
            return
        _fired[stage] = fired + 1
    cls = TransientFault if kind == "transient" else PermanentFault
    raise cls(f"injected {kind} fault in stage {stage!r} (DAF_FAULTS)")


def reset() -> None:
    """Forget how often faults fired (tests)."""
    with _lock:
        _fired.clear()
