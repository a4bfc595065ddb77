"""Aligned plain-text tables: the one layout every report and trend table uses.

Cells arrive already formatted as strings; each column is left- or right-aligned as the
caller says. Columns are two spaces apart, under a row of dashes; trailing blanks dropped.
"""

from __future__ import annotations

from collections.abc import Sequence


def render_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], right_aligned: Sequence[bool]
) -> str:
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, right_aligned, strict=True)
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in rows)])
