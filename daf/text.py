"""Strings from users and bundles, made safe to show: a terminal runs the control sequences in what it prints (clear
the screen, move the cursor, draw a fake green "valid" over a red INVALID), and bidirectional-override characters
reorder what a reader sees. Names, paths, zip entries, class names, error messages and a bundle's own output pass
through `printable` before a terminal, a log line or a Markdown summary shows them.
"""

from __future__ import annotations


def printable(text: str, keep: str = "\n\t") -> str:
    """`text` with every character Python does not call printable (C0 and C1 controls, DEL, format characters such
    as the direction marks, overrides and isolates, line and paragraph separators) written as its escape (`\\x1b`,
    `\\u202e`), so that it is shown, not obeyed; those in `keep` stay as they are."""
    return "".join(ch if ch.isprintable() or ch in keep else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
