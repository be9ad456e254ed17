"""Silences in SQLite: kept with their matchers as JSON, and what each has held."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from relayhook.policy.silence import Matcher, Silence, SilenceFacts
from relayhook.store.rows import dump_matchers, facts_of, silence_of, silence_view

__all__ = [
    "active_silences",
    "add_silence",
    "expire_silence",
    "list_silences",
    "mute",
    "silence_facts",
]


def add_silence(
    conn: sqlite3.Connection,
    matchers: Sequence[Matcher],
    starts_at: float,
    ends_at: float,
    comment: str,
    author: str,
    now: float,
) -> int:
    cur = conn.execute(
        "INSERT INTO silences (matchers, starts_at, ends_at, comment, author, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (dump_matchers(matchers), starts_at, ends_at, comment, author, now),
    )
    return int(cur.lastrowid or 0)


def active_silences(conn: sqlite3.Connection, now: float) -> list[Silence]:
    rows = conn.execute(
        "SELECT * FROM silences WHERE ends_at > ? AND starts_at <= ? ORDER BY id", (now, now)
    )
    return [silence_of(row) for row in rows]


def list_silences(
    conn: sqlite3.Connection, now: float, include_ended: bool = False
) -> list[dict[str, Any]]:
    """Silences not ended yet (or all), newest first, each with how many messages it held."""
    rows = conn.execute(
        "SELECT s.*, (SELECT COUNT(*) FROM deliveries d WHERE d.silence_id = s.id) AS held"
        " FROM silences s WHERE ? OR s.ends_at > ? ORDER BY s.id DESC",
        (include_ended, now),
    )
    return [silence_view(row, now) for row in rows]


def expire_silence(conn: sqlite3.Connection, silence_id: int, now: float) -> bool:
    """End a silence now; False when it is unknown or had ended already."""
    cur = conn.execute(
        "UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?", (now, silence_id, now)
    )
    return cur.rowcount == 1


def silence_facts(conn: sqlite3.Connection, ids: Iterable[int]) -> dict[int, SilenceFacts]:
    """What matchers read of each of these deliveries: its event's payload and its item."""
    facts: dict[int, SilenceFacts] = {}
    for delivery_id in ids:
        row = conn.execute(
            "SELECT e.source, e.event_type, e.body, d.rule, d.destination, d.item, d.replay_of"
            " FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = ?",
            (delivery_id,),
        ).fetchone()
        if row is None:
            continue
        facts[delivery_id] = facts_of(row)
    return facts


def mute(conn: sqlite3.Connection, muted: Sequence[tuple[int, int]], now: float) -> list[int]:
    """Mark unfinished deliveries silenced by the given silence ids: the ones it did."""
    done = []
    for delivery_id, silence_id in muted:
        cur = conn.execute(
            "UPDATE deliveries SET state = 'silenced', silence_id = ?, next_attempt_at = NULL,"
            " updated_at = ? WHERE id = ? AND state IN ('pending', 'retrying')",
            (silence_id, now, delivery_id),
        )
        if cur.rowcount == 1:
            done.append(delivery_id)
    return done
