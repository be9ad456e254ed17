"""What relayhook records about events, deliveries and attempts, as plain SQL on a connection.

The daemon runs these through the Store's writer thread; the CLI runs them on its own
connection beside a running daemon (WAL lets both work at once).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass
from typing import Any

from relayhook.router import Message

__all__ = [
    "STATES",
    "Claimed",
    "due",
    "events_to_route",
    "get_delivery",
    "list_deliveries",
    "next_due_at",
    "record_attempts",
    "recover",
    "replay",
    "save_routing",
]

# A delivery is pending (never tried) or retrying (tried, waiting), also while an attempt
# is in flight; or finished: delivered, dead (out of tries or not retryable) or failed
# (never renderable). 'sending' is only found in databases from before in-flight work was
# kept in memory; recover() turns it back into 'retrying'.
STATES = ("pending", "retrying", "delivered", "dead", "failed")


def events_to_route(conn: sqlite3.Connection, limit: int) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT id, source, event_type, received_at, headers, body FROM events"
        " WHERE state = 'received' ORDER BY id LIMIT ?",
        (limit,),
    ).fetchall()


def save_routing(
    conn: sqlite3.Connection, event_id: int, messages: Sequence[Message], now: float
) -> bool:
    """One delivery per message (failed when it did not render), and the event's new state.

    Only an event still waiting to be routed is: routing the same event twice (say, from
    the in-memory hint and a database scan) creates its deliveries once. Returns whether
    this call routed it.
    """
    state = "routed" if messages else "unrouted"
    cur = conn.execute(
        "UPDATE events SET state = ? WHERE id = ? AND state = 'received'", (state, event_id)
    )
    if cur.rowcount != 1:
        return False
    conn.executemany(
        "INSERT INTO deliveries (event_id, rule, destination, item_index, title, body, format,"
        " state, next_attempt_at, created_at, updated_at, last_error)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                event_id,
                m.rule,
                m.destination,
                m.item_index,
                m.title,
                m.body,
                m.format,
                "failed" if m.error else "pending",
                None if m.error else now,
                now,
                now,
                m.error,
            )
            for m in messages
        ],
    )
    return True


def save_routings(
    conn: sqlite3.Connection, plan: Sequence[tuple[int, Sequence[Message]]], now: float
) -> list[bool]:
    """save_routing for many events; those that matched nothing in one statement."""
    unrouted = [event_id for event_id, messages in plan if not messages]
    if len(unrouted) > 1:
        # Whether each was still waiting does not matter here: there is nothing to insert.
        conn.executemany(
            "UPDATE events SET state = 'unrouted' WHERE id = ? AND state = 'received'",
            [(event_id,) for event_id in unrouted],
        )
        return [
            True if not messages else save_routing(conn, event_id, messages, now)
            for event_id, messages in plan
        ]
    return [save_routing(conn, event_id, messages, now) for event_id, messages in plan]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery taken for one attempt."""

    id: int
    destination: str
    title: str
    body: str
    format: str
    attempts: int
    event_id: int
    received_at: float


_DUE_SQL = (
    "SELECT d.id, d.destination, d.title, d.body, d.format, d.attempts, d.event_id, e.received_at"
    " FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.destination = ?"
    " AND d.state IN ('pending', 'retrying') AND d.next_attempt_at <= ?"
    " ORDER BY d.next_attempt_at LIMIT ?"
)


def due(
    conn: sqlite3.Connection, wants: dict[str, int], busy: Set[int], now: float
) -> tuple[list[Claimed], float | None]:
    """Up to wants[destination] due deliveries each, skipping those in flight (busy), and
    when the next one falls due.

    Nothing is written: what is in flight is known in memory only, so a crash leaves it
    pending, to be tried again (at least once) after the restart.
    """
    taken: list[Claimed] = []
    for destination, free in wants.items():
        n = 0
        for row in conn.execute(_DUE_SQL, (destination, now, free + len(busy))):
            if row[0] in busy:
                continue
            taken.append(Claimed(*row))
            n += 1
            if n == free:
                break
    return taken, next_due_at(conn, wants)


def next_due_at(conn: sqlite3.Connection, destinations: Iterable[str]) -> float | None:
    """When the earliest waiting delivery to any of these destinations falls due."""
    names = list(destinations)
    if not names:
        return None
    marks = ",".join("?" * len(names))
    row = conn.execute(
        f"SELECT MIN(next_attempt_at) FROM deliveries WHERE state IN ('pending', 'retrying')"  # noqa: S608
        f" AND destination IN ({marks})",
        names,
    ).fetchone()
    return None if row[0] is None else float(row[0])


def waiting_by_destination(conn: sqlite3.Connection) -> dict[str, int]:
    """Deliveries still to be sent (pending or retrying), per destination."""
    return {
        row[0]: int(row[1])
        for row in conn.execute(
            "SELECT destination, COUNT(*) FROM deliveries"
            " WHERE state IN ('pending', 'retrying') GROUP BY destination"
        )
    }


def record_attempts(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Many attempts at once: (delivery_id, number, started_at, duration_ms, outcome, error,
    state, next_attempt_at, now) each."""
    conn.executemany(
        "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, error)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [r[:6] for r in rows],
    )
    conn.executemany(
        "UPDATE deliveries SET state = ?, attempts = ?, next_attempt_at = ?, updated_at = ?,"
        " last_error = ? WHERE id = ?",
        [(r[6], r[1], r[7], r[8], r[5], r[0]) for r in rows],
    )


def recover(conn: sqlite3.Connection, now: float) -> int:
    """After a crash or stop: deliveries caught in flight are due again at once."""
    cur = conn.execute(
        "UPDATE deliveries SET state = 'retrying', next_attempt_at = ?, updated_at = ?"
        " WHERE state = 'sending'",
        (now, now),
    )
    return cur.rowcount


_LIST_SQL = (
    "SELECT d.id, d.event_id, e.source, e.event_type, d.rule, d.destination, d.item_index,"
    " d.state, d.attempts, d.title, d.created_at, d.updated_at, d.next_attempt_at,"
    " d.last_error, d.replay_of FROM deliveries d JOIN events e ON e.id = d.event_id"
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
    delivery["attempts_log"] = [
        dict(a)
        for a in conn.execute(
            "SELECT number, started_at, duration_ms, outcome, error FROM attempts"
            " WHERE delivery_id = ? ORDER BY number",
            (delivery_id,),
        )
    ]
    return delivery


def replay(conn: sqlite3.Connection, ids: Iterable[int], now: float) -> list[tuple[int, int]]:
    """New pending deliveries copied from finished ones: [(original id, new id)]."""
    made = []
    for original in ids:
        cur = conn.execute(
            "INSERT INTO deliveries (event_id, rule, destination, item_index, title, body, format,"
            " state, next_attempt_at, created_at, updated_at, replay_of)"
            " SELECT event_id, rule, destination, item_index, title, body, format, 'pending',"
            " ?, ?, ?, id"
            " FROM deliveries WHERE id = ? AND state IN ('delivered', 'dead')",
            (now, now, now, original),
        )
        if cur.rowcount == 1:
            made.append((original, int(cur.lastrowid or 0)))
    return made


def dead_since(conn: sqlite3.Connection, since: float) -> list[int]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT id FROM deliveries WHERE state = 'dead' AND updated_at >= ? ORDER BY id",
            (since,),
        )
    ]


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


def queue_stats(conn: sqlite3.Connection, now: float) -> tuple[dict[str, int], float, int]:
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
    return depth, (now - oldest) if oldest is not None else 0.0, int(awaiting)


def prune(
    conn: sqlite3.Connection, cutoff: float, batch: int = 2000
) -> tuple[int, int, int] | None:
    """Delete up to batch finished events older than cutoff, with their deliveries and attempts.

    An event goes only when it was received before the cutoff and none of its deliveries is
    unfinished or touched since: pending and retrying work is never pruned. Returns the
    (events, deliveries, attempts) deleted, or None when nothing was left to delete.
    """
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT e.id FROM events e WHERE e.received_at < ? AND e.state != 'received'"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND"
            " (d.state IN ('pending', 'retrying', 'sending') OR d.updated_at >= ?))"
            " ORDER BY e.id LIMIT ?",
            (cutoff, cutoff, batch),
        )
    ]
    if not ids:
        return None
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS prune_ids (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM prune_ids")
    conn.executemany("INSERT INTO prune_ids VALUES (?)", [(i,) for i in ids])
    attempts = conn.execute(
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id IN"
        " (SELECT id FROM prune_ids))"
    ).rowcount
    deliveries = conn.execute(
        "DELETE FROM deliveries WHERE event_id IN (SELECT id FROM prune_ids)"
    ).rowcount
    events = conn.execute("DELETE FROM events WHERE id IN (SELECT id FROM prune_ids)").rowcount
    return events, deliveries, attempts
