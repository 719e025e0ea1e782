"""Strings from users and bundles, made safe to show: a terminal runs the control sequences in what it prints (clear
the screen, move the cursor, draw a fake green "valid" over a red INVALID), and bidirectional-override characters
reorder what a reader sees. Names, paths, zip entries, class names and error messages pass through `printable`
before a terminal, a log line or a Markdown summary shows them.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the Unicode direction marks, embeddings, overrides and
# isolates (the "Trojan Source" characters).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every control or direction-override character written as its escape (`\\x1b`, `\\u202e`), so that
    it is shown, not obeyed."""
    return _UNPRINTABLE.sub(lambda m: _escape(m.group()), text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
