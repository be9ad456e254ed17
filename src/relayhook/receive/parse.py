"""From raw request to event: parse the body, find the type and the dedupe key.

Shared by the HTTP endpoint and `relayhook test`, so both judge an event alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import msgspec

from relayhook.config.settings import Source
from relayhook.errors import EventError, kind_of

__all__ = ["dedupe_key", "event_type_of", "parse_body"]

MAX_KEY_LENGTH = 512


_fast = msgspec.json.Decoder()


def _parse_slowly(raw: bytes, max_depth: int) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EventError(400, "request body is not UTF-8 text") from None
    if not text.strip():
        raise EventError(400, "request body is empty; expected a JSON document")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise EventError(
            400, f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise EventError(400, f"request body nests deeper than {max_depth} levels") from None


def _depth(document: Any) -> int:
    deepest, stack = 0, [(document, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def parse_body(raw: bytes, max_depth: int = 64) -> Any:
    """The JSON document in raw; EventError(400) when it is not JSON or nests too deeply."""
    try:
        # msgspec decodes a typical event ~4x faster than json; the json module is the
        # judge of everything msgspec refuses, and words the error.
        document = _fast.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        document = _parse_slowly(raw, max_depth)
    # Counting brackets is cheap, and only a body with more of them than the limit can
    # nest past it, so most events skip the walk. Far deeper bodies stop the parser itself.
    if raw.count(b"[") + raw.count(b"{") > max_depth and _depth(document) > max_depth:
        raise EventError(400, f"request body nests deeper than {max_depth} levels")
    return document


def event_type_of(source: Source, body: Any, headers: Mapping[str, str]) -> str:
    """The event type named by the source's event_type; EventError(422) when missing."""
    value = source.event_type.extract(body, headers)
    if isinstance(value, str) and value.strip():
        return value
    where = source.event_type.describe()
    if value is None:
        raise EventError(422, f"event type missing: {where} is not in the request")
    what = "an empty string" if isinstance(value, str) else kind_of(value, json=True)
    raise EventError(422, f"event type must be a non-empty string: {where} is {what}")


def dedupe_key(source: Source, body: Any, headers: Mapping[str, str], raw: bytes) -> str:
    """The source's dedupe key, or a hash of the raw body when none is configured or present."""
    if source.event_key is not None:
        value = source.event_key.extract(body, headers)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            text = str(value)
            return (
                text
                if len(text) <= MAX_KEY_LENGTH
                else "sha256:" + hashlib.sha256(text.encode()).hexdigest()
            )
    return "sha256:" + hashlib.sha256(raw).hexdigest()
