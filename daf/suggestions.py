"""'Did you mean' hints for a mistyped name (a mission, a policy, a config field)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean: a, b?' for up to three close choices, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.4)
    return f" Did you mean: {', '.join(close)}?" if close else ""
