"""Reading the log in PostgreSQL for the CLI, the API and the pages."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from psycopg import AsyncConnection

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

Conn = AsyncConnection[Any]
_LIST_SQL = (
    "SELECT d.id, d.event_id, e.source, e.event_type, d.rule, d.destination, d.item_index,"
    " d.state, d.attempts, d.title, d.created_at, d.updated_at, d.next_attempt_at,"
    " d.last_error, d.replay_of, d.silence_id, d.group_id, g.digest_id FROM deliveries d"
    " JOIN events e ON e.id = d.event_id LEFT JOIN groups g ON g.id = d.group_id"
)
_EVENTS_SQL = (
    "SELECT e.id, e.source, e.event_key, e.event_type, e.received_at, e.state,"
    " (SELECT COUNT(*) FROM deliveries d WHERE d.event_id = e.id) AS deliveries FROM events e"
)
_GROUP_SQL = (
    "SELECT id, key, reason, state, count, first_at, last_at, due_at, sent_at, digest_id"
    " FROM groups WHERE "
)


def _terms(pairs: list[tuple[str, object | None]]) -> tuple[list[str], list[object]]:
    """`column <op> %s` terms of fixed SQL text for the values given; values bound."""
    terms = [sql for sql, value in pairs if value is not None]
    return terms, [value for _, value in pairs if value is not None]


def _where(terms: list[str]) -> str:
    return " WHERE " + " AND ".join(terms) if terms else ""


async def _all(conn: Conn, sql: str, args: list[object]) -> list[dict[str, Any]]:
    cur = await conn.execute(sql, args)
    return [dict(row) for row in await cur.fetchall()]


async def _newest(
    conn: Conn, base: str, terms: list[str], args: list[object], limit: int, key: str
) -> list[dict[str, Any]]:
    """Rows of base under terms, newest (highest key) first, at most limit."""
    sql = base + _where(terms) + f" ORDER BY {key} DESC LIMIT %s"
    return await _all(conn, sql, [*args, limit])


async def list_deliveries(
    conn: Conn, *, state: str | None = None, rule: str | None = None,
    destination: str | None = None, since: float | None = None, limit: int = 100,
) -> list[dict[str, Any]]:  # fmt: skip
    terms, args = _terms(
        [("d.state = %s", state), ("d.rule = %s", rule), ("d.destination = %s", destination),
         ("d.created_at >= %s", since)]
    )  # fmt: skip
    return await _all(
        conn, _LIST_SQL + _where(terms) + " ORDER BY d.id DESC LIMIT %s", [*args, limit]
    )


def _only(f: DeliveryFilter, state: str) -> DeliveryFilter:
    return dataclasses.replace(f, states=(state,))


def _delivery_terms(f: DeliveryFilter) -> tuple[list[str], list[object]]:
    terms, args = _terms(
        [("d.destination = %s", f.destination), ("d.rule = %s", f.rule),
         ("d.created_at >= %s", f.since), ("d.created_at < %s", f.until)]
    )  # fmt: skip
    if f.states:
        terms.append("d.state = ANY(%s)")
        args.append(list(f.states))
    return terms, args


async def page_deliveries(
    conn: Conn, f: DeliveryFilter, before: int | None, limit: int
) -> list[dict[str, Any]]:
    if len(f.states) > 1:
        rows = [
            row
            for state in f.states
            for row in await page_deliveries(
                conn, dataclasses.replace(f, states=(state,)), before, limit
            )
        ]
        return sorted(rows, key=lambda row: row["id"], reverse=True)[:limit]
    terms, args = _delivery_terms(f)
    if before is not None:
        terms.append("d.id < %s")
        args.append(before)
    return await _all(
        conn, _LIST_SQL + _where(terms) + " ORDER BY d.id DESC LIMIT %s", [*args, limit]
    )


async def matching_deliveries(conn: Conn, f: DeliveryFilter) -> list[int]:
    terms, args = _delivery_terms(f)
    terms.append("d.state IN ('delivered', 'dead', 'silenced')")
    sql = "SELECT d.id FROM deliveries d" + _where(terms) + " ORDER BY d.id"  # noqa: S608
    rows = await _all(conn, sql, args)
    return [int(row["id"]) for row in rows]


async def list_events(
    conn: Conn, *, state: str | None = None, since: float | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    terms, args = _terms([("e.state = %s", state), ("e.received_at >= %s", since)])
    return await _all(
        conn, _EVENTS_SQL + _where(terms) + " ORDER BY e.id DESC LIMIT %s", [*args, limit]
    )


async def page_events(
    conn: Conn, f: EventFilter, before: int | None, limit: int
) -> list[dict[str, Any]]:
    terms, args = _terms(
        [("e.state = %s", f.state), ("e.source = %s", f.source),
         ("e.event_type = %s", f.event_type), ("e.received_at >= %s", f.since),
         ("e.received_at < %s", f.until), ("e.id < %s", before)]
    )  # fmt: skip
    return await _all(
        conn, _EVENTS_SQL + _where(terms) + " ORDER BY e.id DESC LIMIT %s", [*args, limit]
    )


async def get_event(conn: Conn, event_id: int) -> dict[str, Any] | None:
    rows = await _all(conn, "SELECT * FROM events WHERE id = %s", [event_id])
    if not rows:
        return None
    event = rows[0]
    event["headers"] = json.loads(event["headers"])
    event["deliveries"] = await _all(
        conn,
        "SELECT id, rule, destination, item_index, state, attempts, last_error"
        " FROM deliveries WHERE event_id = %s ORDER BY id",
        [event_id],
    )
    return event


def _group(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return group_view(rows[0]) if rows else None


async def get_delivery(conn: Conn, delivery_id: int) -> dict[str, Any] | None:
    rows = await _all(conn, "SELECT * FROM deliveries WHERE id = %s", [delivery_id])
    if not rows:
        return None
    delivery = rows[0]
    (event,) = await _all(
        conn,
        "SELECT id, source, event_key, event_type, received_at, state, headers, body"
        " FROM events WHERE id = %s",
        [delivery["event_id"]],
    )
    event["headers"] = json.loads(event["headers"])
    delivery["event"] = event
    group = []
    if delivery["group_id"] is not None:
        group = await _all(conn, _GROUP_SQL + "id = %s", [delivery["group_id"]])
    delivery["group"] = _group(group)
    delivery["digest_of"] = _group(await _all(conn, _GROUP_SQL + "digest_id = %s", [delivery_id]))
    delivery["attempts_log"] = await _all(
        conn,
        "SELECT number, started_at, duration_ms, outcome, error, held, late FROM attempts"
        " WHERE delivery_id = %s ORDER BY number, id",
        [delivery_id],
    )
    return delivery


async def queue_stats(conn: Conn, now: float) -> QueueStats:
    depth = {
        row["state"]: int(row["n"])
        for row in await _all(
            conn,
            "SELECT state, COUNT(*) AS n FROM deliveries WHERE state IN ('pending', 'retrying',"
            " 'sending') GROUP BY state",
            [],
        )
    }
    (row,) = await _all(
        conn,
        "SELECT (SELECT MIN(created_at) FROM deliveries WHERE state IN ('pending', 'retrying',"
        " 'sending')) AS oldest, (SELECT COUNT(*) FROM events WHERE state = 'received')"
        " AS awaiting, (SELECT COUNT(*) FROM groups WHERE state != 'sent') AS groups",
        [],
    )
    age = (now - row["oldest"]) if row["oldest"] is not None else 0.0
    return QueueStats(depth, age, int(row["awaiting"]), int(row["groups"]))


async def first_event_since(conn: Conn, since: float) -> int | None:
    """The lowest id of the events received at or after since."""
    (row,) = await _all(
        conn, "SELECT MIN(id) AS first FROM events WHERE received_at >= %s", [since]
    )
    return None if row["first"] is None else int(row["first"])


def _stored(rows: list[dict[str, Any]]) -> list[StoredEvent]:
    return [StoredEvent(stored_event(row), row["event_key"], row["state"]) for row in rows]


async def events_page(conn: Conn, since: float, after: int, limit: int) -> list[StoredEvent]:
    """Up to limit events received at or after since with ids above after, by id."""
    sql = STORED_EVENT_SQL.format(where="id > %s AND received_at >= %s") + " ORDER BY id LIMIT %s"
    return _stored(await _all(conn, sql, [after, since, limit]))


async def events_by_id(conn: Conn, ids: list[int]) -> list[StoredEvent]:
    sql = STORED_EVENT_SQL.format(where="id = ANY(%s)") + " ORDER BY id"
    return _stored(await _all(conn, sql, [ids]))


async def made_for(conn: Conn, event_ids: list[int]) -> list[Made]:
    rows = await _all(conn, MADE_SQL.format(events="= ANY(%s)"), [event_ids])
    return [
        Made(int(r["event_id"]), r["rule"], r["destination"], r["state"], int(r["n"])) for r in rows
    ]
