"""Deliveries in SQLite: claiming due work, recording attempts, recovery and replay."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence, Set

from relayhook.model import Attempt, Delivery

__all__ = [
    "claim_due",
    "dead_since",
    "next_due_at",
    "orphans",
    "record_attempts",
    "recover",
    "replay",
    "requeue_due",
    "waiting_by_destination",
]

_UNFINISHED = "('pending', 'retrying')"
_DUE_SQL = (
    "SELECT d.id, d.event_id, d.destination, d.title, d.body, d.format, d.attempts,"
    " e.received_at, d.severity, d.rule, d.next_attempt_at, d.fallback_of, e.event_type,"
    " e.source FROM deliveries d JOIN events e ON e.id = d.event_id"
    " WHERE d.destination = ? AND d.state IN ('pending', 'retrying')"
    " AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at LIMIT ?"
)


def claim_due(
    conn: sqlite3.Connection, wants: Mapping[str, int], busy: Set[int], now: float
) -> tuple[list[Delivery], float | None]:
    """Up to wants[destination] due deliveries each, oldest due first, skipping those in
    flight (busy); and, when none, when the next one to these destinations falls due.

    Nothing is written: what is in flight is known in memory only (the daemon's lock on
    the file makes it the only sender), so a crash leaves it due, to be tried again (at
    least once) after the restart.
    """
    taken: list[Delivery] = []
    for destination, free in wants.items():
        if free <= 0:
            continue
        n = 0
        for row in conn.execute(_DUE_SQL, (destination, now, free + len(busy))):
            if row[0] in busy:
                continue
            taken.append(Delivery(*row))
            n += 1
            if n == free:
                break
    return taken, None if taken else next_due_at(conn, wants)


def next_due_at(conn: sqlite3.Connection, destinations: Iterable[str]) -> float | None:
    """When the earliest waiting delivery to any of these destinations falls due."""
    names = list(destinations)
    if not names:
        return None
    marks = ",".join("?" * len(names))
    row = conn.execute(
        f"SELECT MIN(next_attempt_at) FROM deliveries WHERE state IN {_UNFINISHED}"  # noqa: S608
        f" AND destination IN ({marks})",
        names,
    ).fetchone()
    return None if row[0] is None else float(row[0])


def waiting_by_destination(conn: sqlite3.Connection) -> dict[str, int]:
    """Deliveries still to be sent (pending or retrying), per destination."""
    return {
        row[0]: int(row[1])
        for row in conn.execute(
            f"SELECT destination, COUNT(*) FROM deliveries WHERE state IN {_UNFINISHED}"  # noqa: S608
            " GROUP BY destination"
        )
    }


def record_attempts(conn: sqlite3.Connection, attempts: Sequence[Attempt]) -> None:
    """Each attempt in the log, its delivery moved to the state it decided (a held one
    spends no attempt), a dead one's fallback delivery added and linked, and each
    destination's last success or error noted."""
    conn.executemany(
        "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, error,"
        " held) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (a.delivery_id, a.number, a.started_at, a.duration_ms, a.outcome, a.error, a.held)
            for a in attempts
        ],
    )
    conn.executemany(
        "UPDATE deliveries SET state = ?, attempts = attempts + ?, next_attempt_at = ?,"
        " updated_at = ?, last_error = ? WHERE id = ?",
        [
            (
                a.decision.state,
                0 if a.held else 1,
                a.decision.next_attempt_at,
                a.recorded_at,
                a.error,
                a.delivery_id,
            )
            for a in attempts
        ],
    )
    for a in attempts:
        if a.fallback is not None:
            _fall_back(conn, a)
    # Each destination's latest success and latest error in the batch.
    last: dict[tuple[str, bool], Attempt] = {}
    for a in attempts:
        if a.destination:
            last[(a.destination, a.decision.state == "delivered")] = a
    for (name, ok), a in last.items():
        conn.execute(
            "INSERT INTO destinations (name, last_success_at, last_error, last_error_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
            " last_success_at = COALESCE(excluded.last_success_at, last_success_at),"
            " last_error = COALESCE(excluded.last_error, last_error),"
            " last_error_at = COALESCE(excluded.last_error_at, last_error_at)",
            (name, a.recorded_at if ok else None, None if ok else a.error or a.outcome,
             None if ok else a.recorded_at),
        )  # fmt: skip


def _fall_back(conn: sqlite3.Connection, a: Attempt) -> None:
    """The fallback delivery of a dead one: same event, rule and severity, linked."""
    fb = a.fallback
    assert fb is not None
    cur = conn.execute(
        "INSERT INTO deliveries (event_id, rule, destination, item_index, title, body, format,"
        " severity, item, state, next_attempt_at, created_at, updated_at, fallback_of)"
        " SELECT event_id, rule, ?, item_index, ?, ?, ?, severity, item, 'pending', ?, ?, ?, id"
        " FROM deliveries WHERE id = ? AND fallback_id IS NULL",
        (fb.destination, fb.title, fb.body, fb.format, a.recorded_at, a.recorded_at,
         a.recorded_at, a.delivery_id),
    )  # fmt: skip
    if cur.rowcount == 1:
        conn.execute(
            "UPDATE deliveries SET fallback_id = ? WHERE id = ?", (cur.lastrowid, a.delivery_id)
        )


def requeue_due(conn: sqlite3.Connection, destination: str, now: float) -> int:
    """Put every delivery due to destination back in the order it first fell due (when
    it was made): after an outage the backlog goes out oldest first. How many."""
    cur = conn.execute(
        f"UPDATE deliveries SET next_attempt_at = created_at WHERE destination = ?"  # noqa: S608
        f" AND state IN {_UNFINISHED} AND next_attempt_at <= ? AND next_attempt_at > created_at",
        (destination, now),
    )
    return cur.rowcount


def orphans(
    conn: sqlite3.Connection, configured: Sequence[str], before: float, now: float
) -> dict[str, int]:
    """Unfinished deliveries to destinations the config no longer has, untouched since
    before, made dead saying so: how many per destination."""
    marks = ",".join("?" * len(configured))
    rows = conn.execute(
        f"SELECT id, destination FROM deliveries WHERE state IN {_UNFINISHED}"  # noqa: S608
        f" AND destination NOT IN ({marks}) AND updated_at < ?",
        [*configured, before],
    ).fetchall()
    found: dict[str, int] = {}
    for delivery_id, destination in rows:
        conn.execute(
            "UPDATE deliveries SET state = 'dead', next_attempt_at = NULL, updated_at = ?,"
            " last_error = ? WHERE id = ?",
            (now, f"destination '{destination}' is no longer in the config", delivery_id),
        )
        found[destination] = found.get(destination, 0) + 1
    return found


def recover(conn: sqlite3.Connection, now: float) -> int:
    """After a crash or stop: deliveries caught in flight are due again at once.

    Only databases from before in-flight work was kept in memory have such rows
    ('sending'); today a crash leaves in-flight work simply due.
    """
    cur = conn.execute(
        "UPDATE deliveries SET state = 'retrying', next_attempt_at = ?, updated_at = ?"
        " WHERE state = 'sending'",
        (now, now),
    )
    return cur.rowcount


def replay(conn: sqlite3.Connection, ids: Iterable[int], now: float) -> list[tuple[int, int]]:
    """New pending deliveries copied from delivered, dead or silenced ones:
    [(original id, new id)]."""
    made = []
    for original in ids:
        cur = conn.execute(
            "INSERT INTO deliveries (event_id, rule, destination, item_index, title, body, format,"
            " severity, item, state, next_attempt_at, created_at, updated_at, replay_of)"
            " SELECT event_id, rule, destination, item_index, title, body, format, severity,"
            " item, 'pending', ?, ?, ?, id"
            " FROM deliveries WHERE id = ? AND state IN ('delivered', 'dead', 'silenced')",
            (now, now, now, original),
        )
        if cur.rowcount == 1:
            made.append((original, int(cur.lastrowid or 0)))
    return made


def dead_since(conn: sqlite3.Connection, since: float) -> list[int]:
    """Deliveries that went dead at or after `since`, oldest first."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT id FROM deliveries WHERE state = 'dead' AND updated_at >= ? ORDER BY id",
            (since,),
        )
    ]
