"""Silences in SQLite: kept with their matchers as JSON, and what each has held."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from relayhook.route.silence import Matcher, Silence, SilenceFacts

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
        (_dump(matchers), starts_at, ends_at, comment, author, now),
    )
    return int(cur.lastrowid or 0)


def _dump(matchers: Sequence[Matcher]) -> str:
    return json.dumps([[m.field, m.op, m.value] for m in matchers], ensure_ascii=False)


def _silence(row: sqlite3.Row) -> Silence:
    matchers = tuple(Matcher(f, op, v) for f, op, v in json.loads(row["matchers"]))
    return Silence(
        row["id"],
        matchers,
        row["starts_at"],
        row["ends_at"],
        row["comment"],
        row["author"],
        row["created_at"],
    )


def active_silences(conn: sqlite3.Connection, now: float) -> list[Silence]:
    rows = conn.execute(
        "SELECT * FROM silences WHERE ends_at > ? AND starts_at <= ? ORDER BY id", (now, now)
    )
    return [_silence(row) for row in rows]


def list_silences(
    conn: sqlite3.Connection, now: float, include_ended: bool = False
) -> list[dict[str, Any]]:
    """Silences not ended yet (or all), newest first, each with how many messages it held."""
    rows = conn.execute(
        "SELECT s.*, (SELECT COUNT(*) FROM deliveries d WHERE d.silence_id = s.id) AS held"
        " FROM silences s WHERE ? OR s.ends_at > ? ORDER BY s.id DESC",
        (include_ended, now),
    )
    found = []
    for row in rows:
        silence = _silence(row)
        found.append(
            {
                "id": silence.id,
                "matchers": [str(m) for m in silence.matchers],
                "starts_at": silence.starts_at,
                "ends_at": silence.ends_at,
                "comment": silence.comment,
                "author": silence.author,
                "created_at": silence.created_at,
                "state": _state(silence, now),
                "held": int(row["held"]),
            }
        )
    return found


def _state(silence: Silence, now: float) -> str:
    if silence.ends_at <= now:
        return "ended"  # also one expired before it began
    return "pending" if now < silence.starts_at else "active"


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
        try:
            body = json.loads(row["body"])
        except ValueError:
            body = None
        facts[delivery_id] = SilenceFacts(
            row["source"],
            row["event_type"],
            row["rule"],
            row["destination"],
            body.get("payload") if isinstance(body, dict) else None,
            json.loads(row["item"]) if row["item"] is not None else None,
            row["replay_of"] is not None,
        )
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
