"""Silences: matchers that mute messages for a while, written as Alertmanager's are.

A matcher is `field=value`, `field!=value`, `field=~regex` or `field!~regex`; a regex
must match the whole value; a value may be quoted ("65a7.*"). Fields: `source`,
`event_type`, `rule`, `destination`, `payload.<path>`, `item.<path>`. Every matcher of a
silence must hold. A bare word, an unknown field or a bad regex is an error, never a
guess: a silence that matched nothing by mistake would hide nothing, and one that
matched everything would hide everything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from relayhook.model import Event, Message

__all__ = ["Matcher", "Silence", "SilenceFacts", "facts_of", "parse_matcher", "silencing"]

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(=~|!~|!=|=)(.*)$", re.DOTALL)
_FIELDS = ("source", "event_type", "rule", "destination")
_PATHS = ("payload.", "item.")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Matcher:
    """One condition on a message."""

    field: str
    op: str  # = != =~ !~
    value: str

    def __str__(self) -> str:
        return f"{self.field}{self.op}{json.dumps(self.value, ensure_ascii=False)}"

    def holds(self, facts: SilenceFacts) -> bool:
        found = facts.get(self.field)
        text = "" if found is _MISSING or found is None else _text(found)
        if self.op in ("=", "!="):
            return (text == self.value) == (self.op == "=")
        matched = re.fullmatch(self.value, text) is not None
        return matched == (self.op == "=~")


@dataclass(frozen=True, slots=True)
class Silence:
    """Matchers, a time span, and why."""

    id: int
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    comment: str
    author: str
    created_at: float

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, facts: SilenceFacts) -> bool:
        return all(m.holds(facts) for m in self.matchers)


@dataclass(frozen=True, slots=True)
class SilenceFacts:
    """What matchers look at in one message."""

    source: str
    event_type: str
    rule: str
    destination: str
    payload: Any = None
    item: Any = None
    replay: bool = False  # a replayed delivery, which silences let through

    def get(self, field: str) -> Any:
        if field in _FIELDS:
            return getattr(self, field)
        root, _, path = field.partition(".")
        node = self.payload if root == "payload" else self.item
        for part in path.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return _MISSING
        return node


def facts_of(event: Event, message: Message) -> SilenceFacts:
    """What matchers look at in a message made of event."""
    body = event.body
    payload = body.get("payload") if isinstance(body, Mapping) else None
    return SilenceFacts(
        event.source, event.event_type, message.rule, message.destination, payload, message.item
    )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            unquoted = json.loads(value)
        except ValueError:
            raise ValueError(f"bad quoted value {value}") from None
        if isinstance(unquoted, str):
            return unquoted
    return value


def parse_matcher(text: str) -> Matcher:
    """A matcher from `field=value` and friends; ValueError naming what is wrong."""
    found = _MATCHER.match(text)
    if found is None:
        raise ValueError(
            f"'{text}' is not a matcher: write field=value, field!=value, field=~regex"
            " or field!~regex"
        )
    field, op, raw = found.groups()
    if field not in _FIELDS and not (field.startswith(_PATHS) and len(field.split(".")) > 1):
        raise ValueError(
            f"'{text}': unknown field '{field}' (use source, event_type, rule, destination,"
            " payload.<path> or item.<path>)"
        )
    if any(not part for part in field.split(".")):
        raise ValueError(f"'{text}': '{field}' has an empty path step")
    value = _unquote(raw)
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"'{text}': bad regular expression: {e}") from None
    return Matcher(field, op, value)


def silencing(silences: Iterable[Silence], facts: SilenceFacts, now: float) -> Silence | None:
    """The first active silence that mutes this message, if any."""
    for silence in silences:
        if silence.active(now) and silence.mutes(facts):
            return silence
    return None
