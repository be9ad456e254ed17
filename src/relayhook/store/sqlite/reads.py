"""Reading the log in SQLite for the CLI and the API: events, deliveries, queue figures."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

from relayhook.store.base import DeliveryFilter, EventFilter, Made, QueueStats, StoredEvent
from relayhook.store.rows import MADE_SQL, STORED_EVENT_SQL, group_view, stored_event

__all__ = [
    "events_by_id",
    "events_page",
    "first_event_since",
    "get_delivery",
    "get_event",
    "list_deliveries",
    "list_events",
    "made_for",
    "matching_deliveries",
    "page_deliveries",
    "page_events",
    "queue_stats",
]

_LIST_SQL = (
    "SELECT d.id, d.event_id, e.source, e.event_type, d.rule, d.destination, d.item_index,"
    " d.state, d.attempts, d.title, d.created_at, d.updated_at, d.next_attempt_at,"
    " d.last_error, d.replay_of, d.silence_id, d.group_id, g.digest_id FROM deliveries d"
    " JOIN events e ON e.id = d.event_id LEFT JOIN groups g ON g.id = d.group_id"
)
_GROUP_SQL = (
    "SELECT id, key, reason, state, count, first_at, last_at, due_at, sent_at, digest_id"
    " FROM groups WHERE "
)


def list_deliveries(
    conn: sqlite3.Connection,
    *,
    state: str | None = None,
    rule: str | None = None,
    destination: str | None = None,
    since: float | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    clause, args = _where(
        {"d.state": state, "d.rule": rule, "d.destination": destination}, "d.created_at", since
    )
    sql = _LIST_SQL + clause + " ORDER BY d.id DESC LIMIT ?"
    return [dict(row) for row in conn.execute(sql, [*args, limit])]


def get_delivery(conn: sqlite3.Connection, delivery_id: int) -> dict[str, Any] | None:
    """A delivery with its event and every attempt, or None."""
    row = conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    if row is None:
        return None
    delivery = dict(row)
    event = dict(
        conn.execute(
            "SELECT id, source, event_key, event_type, received_at, state, headers, body"
            " FROM events WHERE id = ?",
            (delivery["event_id"],),
        ).fetchone()
    )
    event["headers"] = json.loads(event["headers"])
    delivery["event"] = event
    # The group it waits or waited in (and the digest that went for it), and the group a
    # digest went for.
    group = None
    if delivery["group_id"] is not None:
        group = conn.execute(_GROUP_SQL + "id = ?", (delivery["group_id"],)).fetchone()
    delivery["group"] = _group(group)
    digest_of = conn.execute(_GROUP_SQL + "digest_id = ?", (delivery_id,)).fetchone()
    delivery["digest_of"] = _group(digest_of)
    delivery["attempts_log"] = [
        {**dict(a), "held": bool(a["held"]), "late": bool(a["late"])}
        for a in conn.execute(
            "SELECT number, started_at, duration_ms, outcome, error, held, late FROM attempts"
            " WHERE delivery_id = ? ORDER BY number",
            (delivery_id,),
        )
    ]
    return delivery


def _group(row: sqlite3.Row | None) -> dict[str, Any] | None:
    return None if row is None else group_view(row)


_EVENTS_SQL = (
    "SELECT e.id, e.source, e.event_key, e.event_type, e.received_at, e.state,"
    " (SELECT COUNT(*) FROM deliveries d WHERE d.event_id = e.id) AS deliveries FROM events e"
)


def _where(
    equal: dict[str, object | None], since_column: str, since: float | None
) -> tuple[str, list[object]]:
    """A WHERE clause of fixed column names, every value a bound parameter."""
    terms = [f"{column} = ?" for column, value in equal.items() if value is not None]
    args = [value for value in equal.values() if value is not None]
    if since is not None:
        terms.append(f"{since_column} >= ?")
        args.append(since)
    return (" WHERE " + " AND ".join(terms) if terms else ""), args


def list_events(
    conn: sqlite3.Connection,
    *,
    state: str | None = None,
    since: float | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    clause, args = _where({"e.state": state}, "e.received_at", since)
    sql = _EVENTS_SQL + clause + " ORDER BY e.id DESC LIMIT ?"
    return [dict(row) for row in conn.execute(sql, [*args, limit])]


def get_event(conn: sqlite3.Connection, event_id: int) -> dict[str, Any] | None:
    """An event with its body and the summary of each of its deliveries, or None."""
    row = conn.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
    if row is None:
        return None
    event = dict(row)
    event["headers"] = json.loads(event["headers"])
    event["deliveries"] = [
        dict(d)
        for d in conn.execute(
            "SELECT id, rule, destination, item_index, state, attempts, last_error"
            " FROM deliveries WHERE event_id = ? ORDER BY id",
            (event_id,),
        )
    ]
    return event


def queue_stats(conn: sqlite3.Connection, now: float) -> QueueStats:
    """Deliveries per unfinished state, the oldest one's age, and events awaiting routing."""
    depth = {
        row[0]: int(row[1])
        for row in conn.execute(
            "SELECT state, COUNT(*) FROM deliveries WHERE state IN ('pending', 'retrying',"
            " 'sending') GROUP BY state"
        )
    }
    oldest = conn.execute(
        "SELECT MIN(created_at) FROM deliveries WHERE state IN ('pending', 'retrying', 'sending')"
    ).fetchone()[0]
    awaiting = conn.execute("SELECT COUNT(*) FROM events WHERE state = 'received'").fetchone()[0]
    groups = conn.execute("SELECT COUNT(*) FROM groups WHERE state != 'sent'").fetchone()[0]
    age = (now - oldest) if oldest is not None else 0.0
    return QueueStats(depth, age, int(awaiting), int(groups))


def _delivery_terms(f: DeliveryFilter) -> tuple[list[str], list[object]]:
    terms: list[str] = []
    args: list[object] = []
    if len(f.states) == 1:
        terms.append("d.state = ?")
        args.append(f.states[0])
    elif f.states:
        terms.append(f"d.state IN ({','.join('?' * len(f.states))})")
        args += f.states
    for column, value in (("d.destination", f.destination), ("d.rule", f.rule)):
        if value is not None:
            terms.append(f"{column} = ?")
            args.append(value)
    if f.since is not None:
        terms.append("d.created_at >= ?")
        args.append(f.since)
    if f.until is not None:
        terms.append("d.created_at < ?")
        args.append(f.until)
    return terms, args


def page_deliveries(
    conn: sqlite3.Connection, f: DeliveryFilter, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """Deliveries matching f, newest first, with ids below `before` (the page's key)."""
    if len(f.states) > 1:
        # A page per state, each straight off the (state, id) index, merged: one query
        # for them all would sort every matching row to find the newest few.
        rows = [
            row
            for state in f.states
            for row in page_deliveries(conn, dataclasses.replace(f, states=(state,)), before, limit)
        ]
        return sorted(rows, key=lambda row: row["id"], reverse=True)[:limit]
    terms, args = _delivery_terms(f)
    if before is not None:
        terms.append("d.id < ?")
        args.append(before)
    where = " WHERE " + " AND ".join(terms) if terms else ""
    sql = _LIST_SQL + where + " ORDER BY d.id DESC LIMIT ?"
    return [dict(row) for row in conn.execute(sql, [*args, limit])]


def matching_deliveries(conn: sqlite3.Connection, f: DeliveryFilter) -> list[int]:
    """The ids of every delivery matching f that replay takes (delivered, dead, silenced)."""
    terms, args = _delivery_terms(f)
    terms.append("d.state IN ('delivered', 'dead', 'silenced')")
    # Fixed column names only; every value is a bound parameter.
    sql = "SELECT d.id FROM deliveries d WHERE " + " AND ".join(terms) + " ORDER BY d.id"  # noqa: S608
    return [row[0] for row in conn.execute(sql, args)]


def page_events(
    conn: sqlite3.Connection, f: EventFilter, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """Events matching f, newest first, with ids below `before`."""
    terms: list[str] = []
    args: list[object] = []
    for column, value in (
        ("e.state", f.state),
        ("e.source", f.source),
        ("e.event_type", f.event_type),
    ):
        if value is not None:
            terms.append(f"{column} = ?")
            args.append(value)
    if f.since is not None:
        terms.append("e.received_at >= ?")
        args.append(f.since)
    if f.until is not None:
        terms.append("e.received_at < ?")
        args.append(f.until)
    if before is not None:
        terms.append("e.id < ?")
        args.append(before)
    where = " WHERE " + " AND ".join(terms) if terms else ""
    sql = _EVENTS_SQL + where + " ORDER BY e.id DESC LIMIT ?"
    return [dict(row) for row in conn.execute(sql, [*args, limit])]


def first_event_since(conn: sqlite3.Connection, since: float) -> int | None:
    """The lowest id of the events received at or after since (off the received_at
    index, so a scan of the last hour does not walk years of older rows)."""
    row = conn.execute("SELECT MIN(id) FROM events WHERE received_at >= ?", (since,)).fetchone()
    return None if row[0] is None else int(row[0])


def events_page(
    conn: sqlite3.Connection, since: float, after: int, limit: int
) -> list[StoredEvent]:
    """Up to limit events received at or after since with ids above after, by id."""
    rows = conn.execute(
        STORED_EVENT_SQL.format(where="id > ? AND received_at >= ?") + " ORDER BY id LIMIT ?",
        (after, since, limit),
    )
    return [StoredEvent(stored_event(row), row["event_key"], row["state"]) for row in rows]


def events_by_id(conn: sqlite3.Connection, ids: list[int]) -> list[StoredEvent]:
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        STORED_EVENT_SQL.format(where=f"id IN ({marks})") + " ORDER BY id", ids
    ).fetchall()
    return [StoredEvent(stored_event(row), row["event_key"], row["state"]) for row in rows]


def made_for(conn: sqlite3.Connection, event_ids: list[int]) -> list[Made]:
    if not event_ids:
        return []
    marks = ",".join("?" * len(event_ids))
    rows = conn.execute(MADE_SQL.format(events=f"IN ({marks})"), event_ids)
    return [Made(*row) for row in rows]
