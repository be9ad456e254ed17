"""Log lines: one JSON object per line for journald, key=value for a person at a TTY.

Every record passes the redactor of the config in force before any handler formats it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from relayhook.ops.redact import Redactor

__all__ = ["CONTEXT_FIELDS", "setup_logging"]

# Fields that code passes with extra={...} and that every line about them carries.
CONTEXT_FIELDS = (
    "event_id",
    "delivery_id",
    "source",
    "event_type",
    "rule",
    "destination",
    "attempt",
    "outcome",
)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: getattr(record, k) for k in CONTEXT_FIELDS if getattr(record, k, None) is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).astimezone().strftime("%H:%M:%S.%f")[:-3]
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        text = f"{ts} {record.levelname:<7} {record.getMessage()}" + (f"  {extra}" if extra else "")
        if record.exc_text:
            text += "\n" + record.exc_text
        return text


class RedactingFilter(logging.Filter):
    """Masks secrets in the message and its exception before any formatting."""

    def __init__(self, redactor: Callable[[], Redactor]) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor()
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def setup_logging(
    level: str,
    redactor: Callable[[], Redactor],
    stream: TextIO | None = None,
    as_json: bool | None = None,
) -> None:
    """Route every log line to stream (stdout): JSON unless it is a TTY."""
    stream = stream or sys.stdout
    handler = logging.StreamHandler(stream)
    use_json = not stream.isatty() if as_json is None else as_json
    handler.setFormatter(JsonFormatter() if use_json else KeyValueFormatter())
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(noisy).handlers[:] = []
        logging.getLogger(noisy).propagate = True
