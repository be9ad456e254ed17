"""Silences in PostgreSQL, shared by every instance."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import AsyncConnection

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

Conn = AsyncConnection[Any]


async def add_silence(
    conn: Conn, matchers: Sequence[Matcher], starts_at: float, ends_at: float, comment: str,
    author: str, now: float,
) -> int:  # fmt: skip
    text = dump_matchers(matchers)
    cur = await conn.execute(
        "INSERT INTO silences (matchers, starts_at, ends_at, comment, author, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (text, starts_at, ends_at, comment, author, now),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def active_silences(conn: Conn, now: float) -> list[Silence]:
    cur = await conn.execute(
        "SELECT * FROM silences WHERE ends_at > %s AND starts_at <= %s ORDER BY id", (now, now)
    )
    return [silence_of(row) for row in await cur.fetchall()]


async def list_silences(
    conn: Conn, now: float, include_ended: bool = False
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT s.*, (SELECT COUNT(*) FROM deliveries d WHERE d.silence_id = s.id) AS held"
        " FROM silences s WHERE %s OR s.ends_at > %s ORDER BY s.id DESC",
        (include_ended, now),
    )
    return [silence_view(row, now) for row in await cur.fetchall()]


async def expire_silence(conn: Conn, silence_id: int, now: float) -> bool:
    cur = await conn.execute(
        "UPDATE silences SET ends_at = %s WHERE id = %s AND ends_at > %s", (now, silence_id, now)
    )
    return cur.rowcount == 1


async def silence_facts(conn: Conn, ids: Iterable[int]) -> dict[int, SilenceFacts]:
    cur = await conn.execute(
        "SELECT d.id, e.source, e.event_type, e.body, d.rule, d.destination, d.item,"
        " d.replay_of FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = ANY(%s)",
        (list(ids),),
    )
    facts: dict[int, SilenceFacts] = {}
    for row in await cur.fetchall():
        facts[int(row["id"])] = facts_of(row)
    return facts


async def mute(conn: Conn, muted: Sequence[tuple[int, int]], now: float) -> list[int]:
    done = []
    for delivery_id, silence_id in muted:
        cur = await conn.execute(
            "UPDATE deliveries SET state = 'silenced', silence_id = %s, next_attempt_at = NULL,"
            " updated_at = %s WHERE id = %s AND state IN ('pending', 'retrying')",
            (silence_id, now, delivery_id),
        )
        if cur.rowcount == 1:
            done.append(delivery_id)
    return done
