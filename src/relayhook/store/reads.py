"""Reading the log, for both databases: events, deliveries and queue figures for the CLI,
the API and the pages, and the scans that compare stored routing with the rules."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from relayhook.store.base import DeliveryFilter, EventFilter, Made, QueueStats, StoredEvent
from relayhook.store.rows import group_view, stored_event
from relayhook.store.sql import Db

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
_EVENTS_SQL = (
    "SELECT e.id, e.source, e.event_key, e.event_type, e.received_at, e.state,"
    " (SELECT COUNT(*) FROM deliveries d WHERE d.event_id = e.id) AS deliveries FROM events e"
)
_GROUP_SQL = (
    "SELECT id, key, reason, state, count, first_at, last_at, due_at, sent_at, digest_id"
    " FROM groups WHERE "
)
_STORED_SQL = (
    "SELECT id, source, event_key, event_type, received_at, headers, body, state FROM events"
)
_UNFINISHED = "state IN ('pending', 'retrying', 'sending')"


def _terms(pairs: list[tuple[str, object | None]]) -> tuple[list[str], list[object]]:
    """`column <op> ?` terms of fixed SQL text for the values given; values bound."""
    terms = [sql for sql, value in pairs if value is not None]
    return terms, [value for _, value in pairs if value is not None]


async def _newest(
    db: Db, base: str, terms: list[str], args: list[object], limit: int, key: str
) -> list[dict[str, Any]]:
    """Rows of base under terms (fixed SQL, values bound), highest key first, at most limit."""
    where = " WHERE " + " AND ".join(terms) if terms else ""
    rows = await db.all(base + where + f" ORDER BY {key} DESC LIMIT ?", [*args, limit])
    return [dict(row) for row in rows]


async def list_deliveries(
    db: Db, *, state: str | None = None, rule: str | None = None,
    destination: str | None = None, since: float | None = None, limit: int = 100,
) -> list[dict[str, Any]]:  # fmt: skip
    terms, args = _terms(
        [("d.state = ?", state), ("d.rule = ?", rule), ("d.destination = ?", destination),
         ("d.created_at >= ?", since)]
    )  # fmt: skip
    return await _newest(db, _LIST_SQL, terms, args, limit, "d.id")


def _delivery_terms(f: DeliveryFilter) -> tuple[list[str], list[object]]:
    terms, args = _terms(
        [("d.destination = ?", f.destination), ("d.rule = ?", f.rule),
         ("d.created_at >= ?", f.since), ("d.created_at < ?", f.until)]
    )  # fmt: skip
    # One state by `=`, so that SQLite reads it straight off the (state, id) index.
    if len(f.states) == 1:
        terms.append("d.state = ?")
        args.append(f.states[0])
    elif f.states:
        terms.append("d.state = ANY(?)")
        args.append(list(f.states))
    return terms, args


async def page_deliveries(
    db: Db, f: DeliveryFilter, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """Deliveries matching f, newest first, with ids below `before` (the page's key)."""
    if len(f.states) > 1:
        # A page per state, each straight off the (state, id) index, merged: one query
        # for them all would sort every matching row to find the newest few.
        rows = [
            row
            for state in f.states
            for row in await page_deliveries(
                db, dataclasses.replace(f, states=(state,)), before, limit
            )
        ]
        return sorted(rows, key=lambda row: row["id"], reverse=True)[:limit]
    terms, args = _delivery_terms(f)
    if before is not None:
        terms.append("d.id < ?")
        args.append(before)
    return await _newest(db, _LIST_SQL, terms, args, limit, "d.id")


async def matching_deliveries(db: Db, f: DeliveryFilter) -> list[int]:
    """The ids of every delivery matching f that replay takes (delivered, dead, silenced)."""
    terms, args = _delivery_terms(f)
    terms.append("d.state IN ('delivered', 'dead', 'silenced')")
    # Fixed column names only; every value is a bound parameter.
    sql = "SELECT d.id FROM deliveries d WHERE " + " AND ".join(terms) + " ORDER BY d.id"  # noqa: S608
    return [int(row["id"]) for row in await db.all(sql, args)]


async def list_events(
    db: Db, *, state: str | None = None, since: float | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    terms, args = _terms([("e.state = ?", state), ("e.received_at >= ?", since)])
    return await _newest(db, _EVENTS_SQL, terms, args, limit, "e.id")


async def page_events(
    db: Db, f: EventFilter, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """Events matching f, newest first, with ids below `before`."""
    terms, args = _terms(
        [("e.state = ?", f.state), ("e.source = ?", f.source),
         ("e.event_type = ?", f.event_type), ("e.received_at >= ?", f.since),
         ("e.received_at < ?", f.until), ("e.id < ?", before)]
    )  # fmt: skip
    return await _newest(db, _EVENTS_SQL, terms, args, limit, "e.id")


async def get_event(db: Db, event_id: int) -> dict[str, Any] | None:
    """An event with its body and the summary of each of its deliveries, or None."""
    row = await db.one("SELECT * FROM events WHERE id = ?", (event_id,))
    if row is None:
        return None
    event = dict(row)
    event["headers"] = json.loads(event["headers"])
    rows = await db.all(
        "SELECT id, rule, destination, item_index, state, attempts, last_error"
        " FROM deliveries WHERE event_id = ? ORDER BY id",
        (event_id,),
    )
    event["deliveries"] = [dict(d) for d in rows]
    return event


async def _group(db: Db, where: str, value: object) -> dict[str, Any] | None:
    row = await db.one(_GROUP_SQL + where, (value,))
    return None if row is None else group_view(row)


async def get_delivery(db: Db, delivery_id: int) -> dict[str, Any] | None:
    """A delivery with its event and every attempt, or None."""
    row = await db.one("SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
    if row is None:
        return None
    delivery = dict(row)
    found = await db.one(
        "SELECT id, source, event_key, event_type, received_at, state, headers, body"
        " FROM events WHERE id = ?",
        (delivery["event_id"],),
    )
    assert found is not None
    event = dict(found)
    event["headers"] = json.loads(event["headers"])
    delivery["event"] = event
    # The group it waits or waited in (and the digest that went for it), and the group a
    # digest went for.
    group_id = delivery["group_id"]
    delivery["group"] = None if group_id is None else await _group(db, "id = ?", group_id)
    delivery["digest_of"] = await _group(db, "digest_id = ?", delivery_id)
    attempts = await db.all(
        "SELECT number, started_at, duration_ms, outcome, error, held, late FROM attempts"
        " WHERE delivery_id = ? ORDER BY number, id",
        (delivery_id,),
    )
    # SQLite keeps booleans as integers.
    delivery["attempts_log"] = [
        {**dict(a), "held": bool(a["held"]), "late": bool(a["late"])} for a in attempts
    ]
    return delivery


async def queue_stats(db: Db, now: float) -> QueueStats:
    """Deliveries per unfinished state, the oldest one's age, and events awaiting routing."""
    rows = await db.all(
        f"SELECT state, COUNT(*) AS n FROM deliveries WHERE {_UNFINISHED} GROUP BY state"  # noqa: S608
    )
    row = await db.one(
        f"SELECT (SELECT MIN(created_at) FROM deliveries WHERE {_UNFINISHED}) AS oldest,"  # noqa: S608
        " (SELECT COUNT(*) FROM events WHERE state = 'received') AS awaiting,"
        " (SELECT COUNT(*) FROM groups WHERE state != 'sent') AS groups"
    )
    assert row is not None
    age = (now - row["oldest"]) if row["oldest"] is not None else 0.0
    depth = {r["state"]: int(r["n"]) for r in rows}
    return QueueStats(depth, age, int(row["awaiting"]), int(row["groups"]))


async def first_event_since(db: Db, since: float) -> int | None:
    """The lowest id of the events received at or after since (off the received_at
    index, so a scan of the last hour does not walk years of older rows)."""
    first = await db.value("SELECT MIN(id) FROM events WHERE received_at >= ?", (since,))
    return None if first is None else int(first)


def _stored(rows: list[Any]) -> list[StoredEvent]:
    return [StoredEvent(stored_event(row), row["event_key"], row["state"]) for row in rows]


async def events_page(db: Db, since: float, after: int, limit: int) -> list[StoredEvent]:
    """Up to limit events received at or after since with ids above after, by id."""
    sql = _STORED_SQL + " WHERE id > ? AND received_at >= ? ORDER BY id LIMIT ?"
    return _stored(await db.all(sql, (after, since, limit)))


async def events_by_id(db: Db, ids: list[int]) -> list[StoredEvent]:
    return _stored(await db.all(_STORED_SQL + " WHERE id = ANY(?) ORDER BY id", (ids,)))


# What routing stored, per event, rule, destination and state. Left out: replays and
# fallbacks (a person or a dead delivery made them), and digests: a group's digest is a
# delivery of its own, with no group_id, named by groups.digest_id (a group of one sent
# as itself names its member, which keeps its group_id, so it counts).
_MADE_SQL = (
    "SELECT event_id, rule, destination, state, COUNT(*) AS n FROM deliveries"
    " WHERE event_id = ANY(?) AND replay_of IS NULL AND fallback_of IS NULL"
    " AND (group_id IS NOT NULL"
    " OR NOT EXISTS (SELECT 1 FROM groups g WHERE g.digest_id = deliveries.id))"
    " GROUP BY event_id, rule, destination, state"
)


async def made_for(db: Db, event_ids: list[int]) -> list[Made]:
    if not event_ids:
        return []
    rows = await db.all(_MADE_SQL, (event_ids,))
    return [
        Made(int(r["event_id"]), r["rule"], r["destination"], r["state"], int(r["n"])) for r in rows
    ]
