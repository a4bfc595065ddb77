"""Rendering of reports: aligned text tables for people, JSON for scripts, progress on stderr."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import enum
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from jackpot_grpc.text import table as text_table

Row = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Section:
    """One titled table of a report. `note` is printed instead when there are no rows."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Row]
    note: str | None = None


def jsonable(value: Any) -> Any:
    """Plain JSON values: exact decimals as strings, times in ISO 8601, durations in seconds."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return round(value.total_seconds(), 3)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def emit_json(data: Any, out: TextIO | None = None) -> None:
    stream = sys.stdout if out is None else out
    stream.write(json.dumps(jsonable(data), indent=2, sort_keys=False) + "\n")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.0f}"
    if isinstance(value, timedelta):
        return f"{value.total_seconds():.1f}s"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    text = str(jsonable(value))
    return " ".join(text.split())  # one line per row, whatever the value holds


def render_table(columns: Sequence[str], rows: Sequence[Row], max_width: int = 80) -> str:
    """Rows of values as a text table; columns of numbers only are right-aligned."""
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in r] for r in cells]
    numeric = [
        bool(rows)
        and all(
            isinstance(row.get(c), int | float | Decimal) and not isinstance(row.get(c), bool)
            for row in rows
            if row.get(c) is not None
        )
        for c in columns
    ]
    return text_table.render_table(columns, cells, numeric)


def emit_sections(sections: Sequence[Section], out: TextIO | None = None) -> None:
    stream = sys.stdout if out is None else out
    for index, section in enumerate(sections):
        if index:
            stream.write("\n")
        stream.write(f"== {section.title} ==\n")
        if section.rows:
            stream.write(render_table(section.columns, section.rows) + "\n")
        else:
            stream.write(f"{section.note or '(none)'}\n")


def key_values(pairs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A two-column table from a mapping."""
    return [{"item": k, "value": v} for k, v in pairs.items()]


# --json asks for the JSON alone: no progress, on either stream.
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("progress_quiet", default=False)


@contextlib.contextmanager
def quiet_progress(quiet: bool) -> Iterator[None]:
    token = _QUIET.set(quiet)
    try:
        yield
    finally:
        _QUIET.reset(token)


def progress(message: str) -> None:
    """Progress of long work: stderr, so stdout stays the report (and valid JSON)."""
    if not _QUIET.get():
        print(message, file=sys.stderr, flush=True)
