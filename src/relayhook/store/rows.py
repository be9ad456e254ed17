"""Stored rows into the records and views the stages read, the same for every backend
(a row is read by column name: a sqlite3.Row or a psycopg dict row)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from relayhook.model import CircuitState, Delivery, Event
from relayhook.policy.noise import shown_key
from relayhook.policy.silence import Matcher, Silence, SilenceFacts
from relayhook.store.sql import Row

__all__ = [
    "NO_DESTINATION",
    "circuit_of",
    "delivery_of",
    "destination_view",
    "dump_matchers",
    "facts_of",
    "group_view",
    "member_of",
    "silence_of",
    "silence_view",
    "stored_event",
]

_decode = msgspec.json.Decoder().decode


def group_view(row: Row) -> dict[str, Any]:
    group = dict(row)
    group["key"] = shown_key(group["key"], group["reason"])
    return group


def delivery_of(row: Row) -> Delivery:
    """A claimed delivery, with what its sender reads of the event."""
    return Delivery(
        row["id"], row["event_id"], row["destination"], row["title"], row["body"],
        row["format"], row["attempts"], row["received_at"], row["severity"], row["rule"],
        row["next_attempt_at"], row["fallback_of"], row["event_type"], row["source"],
    )  # fmt: skip


def circuit_of(row: Row) -> CircuitState:
    """A destinations row's circuit."""
    return CircuitState(
        destination=row["name"],
        open=bool(row["circuit_open"]),
        failures=int(row["failures"]),
        opened_at=row["opened_at"],
        probe_every=float(row["probe_every"]),
        next_probe_at=row["next_probe_at"],
        last_error=row["circuit_error"],
    )


# What Store.destination_status says of a destination nothing is known of.
NO_DESTINATION: dict[str, Any] = {
    "circuit": "closed", "opened_at": None, "next_probe_at": None, "last_success_at": None,
    "last_error": None, "last_error_at": None, "queue": 0, "oldest_due_at": None,
}  # fmt: skip


def destination_view(row: Row) -> dict[str, Any]:
    """A destinations row as Store.destination_status shows it (its queue added later)."""
    return {
        **NO_DESTINATION,
        "circuit": "open" if row["circuit_open"] else "closed",
        "opened_at": row["opened_at"],
        "next_probe_at": row["next_probe_at"] if row["circuit_open"] else None,
        "last_success_at": row["last_success_at"],
        "last_error": row["last_error"],
        "last_error_at": row["last_error_at"],
    }


def stored_event(row: Row) -> Event:
    """An event read back whole; one whose stored body is no longer JSON says so."""
    headers: dict[str, str] = json.loads(row["headers"])
    try:
        body = _decode(row["body"])
    except (msgspec.DecodeError, RecursionError):
        try:
            body = json.loads(row["body"])
        except (ValueError, RecursionError) as e:
            return Event(
                row["id"], row["source"], row["event_type"], row["received_at"], headers,
                error=f"the stored body is not JSON: {e}",
            )  # fmt: skip
    return Event(row["id"], row["source"], row["event_type"], row["received_at"], headers, body)


def member_of(row: Row) -> dict[str, Any]:
    """A message of a group as a digest lists it."""
    return {
        "delivery_id": row["id"],
        "title": row["title"],
        "body": row["body"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "source": row["source"],
        "received_at": row["received_at"],
        "item": json.loads(row["item"]) if row["item"] is not None else None,
    }


def dump_matchers(matchers: Sequence[Matcher]) -> str:
    return json.dumps([[m.field, m.op, m.value] for m in matchers], ensure_ascii=False)


def silence_of(row: Row) -> Silence:
    matchers = tuple(Matcher(f, op, v) for f, op, v in json.loads(row["matchers"]))
    return Silence(
        row["id"], matchers, row["starts_at"], row["ends_at"], row["comment"], row["author"],
        row["created_at"],
    )  # fmt: skip


def silence_view(row: Row, now: float) -> dict[str, Any]:
    """A silence as `silence list` and the pages show it, with the messages it held."""
    s = silence_of(row)
    # An expired one is ended, also one expired before it began.
    state = "ended" if s.ends_at <= now else "pending" if now < s.starts_at else "active"
    return {
        "id": s.id,
        "matchers": [str(m) for m in s.matchers],
        "starts_at": s.starts_at,
        "ends_at": s.ends_at,
        "comment": s.comment,
        "author": s.author,
        "created_at": s.created_at,
        "state": state,
        "held": int(row["held"]),
    }


def facts_of(row: Row) -> SilenceFacts:
    """What matchers read of a delivery: its event's payload and its item."""
    try:
        body = json.loads(row["body"])
    except ValueError:
        body = None
    return SilenceFacts(
        row["source"], row["event_type"], row["rule"], row["destination"],
        body.get("payload") if isinstance(body, dict) else None,
        json.loads(row["item"]) if row["item"] is not None else None,
        row["replay_of"] is not None,
    )  # fmt: skip
