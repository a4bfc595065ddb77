"""How a time and an error read in a JSON report (health endpoints, the failover watch)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_time(value: datetime | float | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        value = datetime.fromtimestamp(value, UTC)
    return value.isoformat()


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
