"""One line of human text from a message, for logs, tables and health answers."""

from __future__ import annotations


def first_line(text: object) -> str:
    """The first line of `text` (drivers add multi-line context), or "" when it is empty."""
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else ""
