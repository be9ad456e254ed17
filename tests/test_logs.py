"""Log lines: JSON for journald, key=value at a terminal, secrets masked in both."""

from __future__ import annotations

import io
import json
import logging

import pytest

from relayhook.ops.logs import setup_logging
from relayhook.ops.redact import Redactor


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_terminal_gets_key_value_lines() -> None:
    out = Terminal()
    setup_logging("info", lambda: Redactor(["tok-secret-1"]), stream=out)
    logging.getLogger("relayhook.deliver").warning(
        "delivery %s failed: token tok-secret-1 refused",
        7,
        extra={"delivery_id": 7, "event_id": 3, "destination": "ops"},
    )
    line = out.getvalue().strip()
    assert line.endswith(
        "WARNING delivery 7 failed: token *** refused  event_id=3 delivery_id=7 destination=ops"
    )


def test_pipe_gets_json_lines_with_exceptions_redacted() -> None:
    out = io.StringIO()
    setup_logging("debug", lambda: Redactor(["tok-secret-1"]), stream=out)
    try:
        raise ValueError("bad tok-secret-1")
    except ValueError:
        logging.getLogger("relayhook").exception("failed for event %s", 5, extra={"event_id": 5})
    record = json.loads(out.getvalue())
    assert record["level"] == "error" and record["event_id"] == 5
    assert record["msg"] == "failed for event 5"
    assert "ValueError: bad ***" in record["exception"] and "tok-secret-1" not in out.getvalue()
