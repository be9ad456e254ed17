"""Events in SQLite: inserting accepted ones, finding those to route, saving routings."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from relayhook.model import DeliveryState, Event, Message, Routing
from relayhook.store.rows import stored_event
from relayhook.store.sqlite.groups import hold_quiet, join_group, throttled

__all__ = ["events_to_route", "insert_events", "save_routings"]

_INSERT_EVENTS = (
    "INSERT INTO events (id, source, event_key, event_type, received_at, headers, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, event_key) DO NOTHING"
)
_encode = msgspec.json.Encoder().encode


def insert_events(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[tuple[int, bool]]:
    """Insert (id, source, key, type, received_at, headers, body) rows in one statement:
    (the stored id, whether (source, key) was known already) for each."""
    cur = conn.executemany(_INSERT_EVENTS, rows)
    if cur.rowcount == len(rows):
        return [(row[0], False) for row in rows]
    # Some keys were known: find which rows stand in their place.
    found: list[tuple[int, bool]] = []
    for row in rows:
        stored = conn.execute(
            "SELECT id FROM events WHERE source = ? AND event_key = ?", (row[1], row[2])
        ).fetchone()[0]
        found.append((stored, stored != row[0]))
    return found


def events_to_route(
    conn: sqlite3.Connection, limit: int, received_before: float | None = None
) -> list[Event]:
    """The oldest events not routed yet, read back whole."""
    rows = conn.execute(
        "SELECT id, source, event_type, received_at, headers, body FROM events"
        " WHERE state = 'received' AND (? IS NULL OR received_at < ?) ORDER BY id LIMIT ?",
        (received_before, received_before, limit),
    ).fetchall()
    return [stored_event(row) for row in rows]


def _save_routing(conn: sqlite3.Connection, routing: Routing, now: float) -> bool:
    """One delivery per message (failed when it did not render), and the event's new state.

    Only an event still waiting to be routed is: routing the same event twice (say, from
    the in-memory hint and a database scan) creates its deliveries once. Returns whether
    this call routed it.
    """
    state = "routed" if routing.messages else "unrouted"
    cur = conn.execute(
        "UPDATE events SET state = ? WHERE id = ? AND state = 'received'",
        (state, routing.event_id),
    )
    if cur.rowcount != 1:
        return False
    placed = [(m, *_place(conn, routing.event_id, m, now)) for m in routing.messages]
    conn.executemany(
        "INSERT INTO deliveries (event_id, rule, destination, item_index, title, body, format,"
        " state, next_attempt_at, created_at, updated_at, last_error, severity, silence_id,"
        " item, group_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                routing.event_id,
                m.rule,
                m.destination,
                m.item_index,
                m.title,
                m.body,
                m.format,
                state,
                now if state is DeliveryState.PENDING else None,
                now,
                now,
                m.error,
                m.severity,
                m.silence_id,
                None if m.item is None else _encode(m.item).decode(),
                group_id,
            )
            for m, state, group_id in placed
        ],
    )
    return True


def _place(
    conn: sqlite3.Connection, event_id: int, m: Message, now: float
) -> tuple[DeliveryState, int | None]:
    """Where a message goes, in the noise stages' order: failed, silenced, held by its
    throttle, folded into its group, held by quiet hours, or due now. (state, the group
    it joined)."""
    if m.error:
        return DeliveryState.FAILED, None
    if m.silence_id is not None:
        return DeliveryState.SILENCED, None
    if m.throttle is not None:
        held = throttled(conn, event_id, m, now)
        if held is not None:
            return DeliveryState.GROUPED, held
    if m.grouping is not None:
        return DeliveryState.GROUPED, join_group(conn, event_id, m, now)
    if m.quiet_until is not None:
        return DeliveryState.GROUPED, hold_quiet(conn, event_id, m, now)
    return DeliveryState.PENDING, None


def save_routings(conn: sqlite3.Connection, routings: Sequence[Routing], now: float) -> list[bool]:
    """Each routing saved; whether each event was still waiting (so this call routed it).

    Events that matched nothing are marked in one statement.
    """
    seen: set[int] = set()
    first: list[bool] = []  # an event given twice: its first routing counts
    for r in routings:
        first.append(r.event_id not in seen)
        seen.add(r.event_id)
    unrouted = [r.event_id for r, f in zip(routings, first, strict=True) if f and not r.messages]
    batched, marked = len(unrouted) > 1, set[int]()
    if batched:
        marks = ",".join("?" * len(unrouted))
        marked = {
            row[0]
            for row in conn.execute(
                f"UPDATE events SET state = 'unrouted' WHERE id IN ({marks})"  # noqa: S608
                " AND state = 'received' RETURNING id",
                unrouted,
            )
        }
    return [
        f and (r.event_id in marked if batched and not r.messages else _save_routing(conn, r, now))
        for r, f in zip(routings, first, strict=True)
    ]
